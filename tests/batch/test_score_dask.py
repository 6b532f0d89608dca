"""Scoring through a real Dask cluster (joblib's dask backend) gives the local results."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest
from batch_fixtures import LABELS, SAMPLE_CALLS, make_model_folder

from callmood.batch.score import ScoreConfig, score_calls
from callmood.model.ensemble import write_ensemble_folder
from callmood.model.folder import load_model_folder

distributed = pytest.importorskip("distributed")


def segments(out):
    table = ds.dataset(out / "segments", partitioning="hive").to_table()
    rows = table.drop_columns(["scored_at"]).to_pylist()
    return sorted(rows, key=lambda r: (r["call_id"], r["channel"], r["start_s"]))


def exact(row: dict) -> dict:
    """The fields of a segment row that do not depend on float rounding."""
    return {k: v for k, v in row.items()
            if not k.startswith("p_") and k not in ("emotion", "confidence")}


@pytest.mark.parametrize("kind", ["one model", "ensemble"])
def test_dask_cluster_run_equals_local_run(tmp_path, kind):
    model = str(make_model_folder(tmp_path / "model"))
    version = load_model_folder(model).version
    if kind == "ensemble":  # shipped with its member folders
        version = write_ensemble_folder(tmp_path / "ensemble", [
            model, make_model_folder(tmp_path / "other", seed=1)], "tiny-ensemble").version
        model = str(tmp_path / "ensemble")
    local = score_calls([str(SAMPLE_CALLS)], str(tmp_path / "local"), model,
                        ScoreConfig(workers=1), progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = score_calls([str(SAMPLE_CALLS)], str(tmp_path / "dask"), model,
                             ScoreConfig(backend="dask", scheduler=cluster.scheduler_address),
                             progress=False)
    assert remote.calls_scored == local.calls_scored == 12
    assert remote.segments == local.segments
    expected, got = segments(tmp_path / "local"), segments(tmp_path / "dask")
    assert len(got) == len(expected)
    assert {row["model_version"] for row in got} == {version}
    for a, b in zip(expected, got, strict=True):
        # the same segment: call, file, channel, role, timing and model, exactly
        assert exact(a) == exact(b)
        # the same scores, up to float rounding in other processes and thread counts
        assert all(abs(a[f"p_{label}"] - b[f"p_{label}"]) < 1e-4 for label in LABELS), (a, b)
        assert abs(a["confidence"] - b["confidence"]) < 1e-4, (a, b)
        # the same emotion, unless two labels tie within that rounding
        assert a["emotion"] == b["emotion"] or \
            abs(a[f"p_{a['emotion']}"] - a[f"p_{b['emotion']}"]) < 1e-4, (a, b)
