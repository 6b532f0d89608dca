"""Pytest fixtures for the query and dashboard tests; the data is in dashboard_data.py.

Load with ``pytest_plugins = ["dashboard_fixtures"]`` (tests/conftest.py is the lead's).
"""

from pathlib import Path

import pytest
from dashboard_data import build_sample_results


@pytest.fixture(scope="session")

def sample_results(tmp_path_factory) -> Path:
    """The hand-made results folder (shared: tests must not modify it)."""
    return build_sample_results(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def empty_results(tmp_path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root
