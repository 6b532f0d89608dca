"""A real S3-compatible server for the tests: moto's server mode, started as a separate
process on 127.0.0.1 once per session, with a fresh bucket for each test.

Load with ``pytest_plugins = ["s3_fixtures"]``. While the server runs, its endpoint and
dummy credentials are in the environment (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...),
where s3fs finds them, and so do the processes a test starts (local workers, Dask
workers, a killed run).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid

import pytest
import s3fs
from joblib.externals.loky import get_reusable_executor
from live_fixtures import free_port
from processes import wait_for_http
from s3_data import Bucket, Night, s3_environment

from callmood.workers import die_with


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(  # dies with the tests, also when they are killed
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=functools.partial(die_with, os.getpid()))
    try:
        wait_for_http(f"{endpoint}/moto-api/", process)
        with pytest.MonkeyPatch.context() as env:
            env.delenv("AWS_PROFILE", raising=False)
            for key, value in s3_environment(endpoint).items():
                env.setenv(key, value)
            # local workers an earlier test started lack this environment: start afresh
            get_reusable_executor().shutdown(wait=True)
            yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3(s3_endpoint) -> Bucket:
    """A new, empty bucket on the server."""
    s3fs.S3FileSystem.clear_instance_cache()  # none made with another test's environment
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    yield Bucket(s3_endpoint, name, fs)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def local_night(tmp_path_factory, s3_endpoint) -> Night:
    """sample_calls/ scored from the local disk, once a session (after the server's
    environment is set: the local workers it starts keep it for later runs)."""
    from batch_fixtures import SAMPLE_CALLS, make_model_folder

    from callmood.batch.score import ScoreConfig, score_calls

    folder = tmp_path_factory.mktemp("local-night")
    model = str(make_model_folder(folder / "model"))
    score_calls([str(SAMPLE_CALLS)], str(folder / "results"), model, ScoreConfig(workers=2),
                progress=False)
    return Night(model, folder / "results")


