"""benchmarks/harness.py: the machine record, atomic JSON reports, --shared, kept cells."""

import argparse
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"


@pytest.fixture(scope="module")
def harness():
    return load_benchmark("harness")


def test_the_machine_record_has_one_shape(harness):
    import torch

    record = harness.machine("torch", "numpy", note="x")
    assert list(record)[:5] == ["cpu", "cores", "cpu_count", "platform", "python"]
    assert record["cpu"] and 1 <= record["cores"] <= record["cpu_count"]
    assert record["numpy"] == np.__version__
    assert record["torch"] == torch.__version__
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["device"] in ("cpu", "cuda") and record["note"] == "x"
    assert dt.datetime.fromisoformat(record["date"]).tzinfo is not None
    assert json.loads(json.dumps(record)) == record
    bare = harness.machine()
    assert set(bare) == {"cpu", "cores", "cpu_count", "platform", "python", "date"}
    assert harness.machine("no-such-package-here")["no-such-package-here"] is None


def test_write_json_records_the_command_and_replaces_the_file_whole(harness, tmp_path):
    path = tmp_path / "deeper" / "report.json"
    harness.write_json(path, {"figure": 1.5, "command": "stale"})
    first = path.read_text()
    assert first.endswith("}\n") and first.startswith('{\n  "command": "python ')
    data = json.loads(first)
    assert list(data) == ["command", "figure"] and data["command"] != "stale"
    with open(path) as reader:  # a reader that opened the old report before the rewrite
        harness.write_json(path, {"figure": 2.5}, command="python benchmarks/x.py --y 1")
        assert reader.read() == first  # still reads the old file whole: renamed, not rewritten
    assert json.loads(path.read_text()) == {"command": "python benchmarks/x.py --y 1",
                                            "figure": 2.5}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp files
    # a write that cannot land leaves no temporary file behind
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        harness.write_text(tmp_path / "taken", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deeper", "taken"]


def test_the_command_line_is_written_from_the_repository_root(harness):
    argv = [str(BENCHMARKS / "bench_queries.py"), "--calls", "2000", "--json", "/tmp/a b.json"]
    assert harness.command_line(argv) == ("python benchmarks/bench_queries.py --calls 2000 "
                                          "--json '/tmp/a b.json'")
    assert harness.command_line(["/elsewhere/script.py"]) == "python /elsewhere/script.py"


def test_shared_defaults_to_callmood_shared_then_beside_the_repository(harness, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("CALLMOOD_SHARED", str(tmp_path))
    parser = argparse.ArgumentParser()
    harness.add_shared_option(parser)
    assert harness.shared_default() == tmp_path == parser.parse_args([]).shared
    assert parser.parse_args(["--shared", "/x"]).shared == Path("/x")
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("CALLMOOD_SHARED")
        else:
            monkeypatch.setenv("CALLMOOD_SHARED", unset)
        assert harness.shared_default() == ROOT.parent / "shared"


def test_every_script_takes_shared_data_and_writes_reports_through_the_harness():
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "harness.py")
    assert len(scripts) >= 13
    for script in scripts:
        text = script.read_text()
        assert "import harness" in text or "from harness import" in text, script.name
        assert '"--shared"' not in text, f"{script.name}: use harness.add_shared_option"
        assert not re.search(r"write_text\(json\.dumps", text), f"{script.name}: write_json"
        assert "platform." not in text, f"{script.name}: harness.machine"


def test_a_cell_store_keeps_results_with_their_settings(harness, tmp_path):
    store = harness.CellStore(tmp_path / "cells")
    assert store.load("fold1-row1") is None and not store.has("fold1-row1")
    store.save_with_settings("fold1-row1", {"space": (1, 2)}, {"ua": 0.5})
    assert store.has("fold1-row1")
    assert store.load_if_same("fold1-row1", {"space": (1, 2)}) == {"ua": 0.5}  # tuple = list
    assert store.load_if_same("fold1-row1", {"space": (1, 3)}) is None
    assert store.load_if_same("fold2-row1", {"space": (1, 2)}) is None
    store.clear()
    assert not (tmp_path / "cells").exists()


@pytest.mark.parametrize(("folder", "indent"), [("ravdess_cells", 1), ("transfer_cells", 1),
                                                ("transfer_cells", None)])
def test_committed_cells_keep_their_format(harness, tmp_path, folder, indent):
    """Every committed cell loads, and saving it again writes the same bytes, so a resumed
    run leaves the committed cells as they are."""
    kept = harness.CellStore(RESULTS / folder, indent)
    again = harness.CellStore(tmp_path, indent)
    names = [p.stem for p in sorted((RESULTS / folder).glob("*.json"))
             if (indent is None) == p.name.startswith("si-")]
    assert names
    for name in names:
        cell = kept.load(name)
        if folder == "ravdess_cells":
            assert set(cell) == {"settings", "result"}
            assert kept.load_if_same(name, cell["settings"]) == cell["result"]
        again.save(name, cell)
        assert again.path(name).read_bytes() == kept.path(name).read_bytes(), name
