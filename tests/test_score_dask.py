"""Scoring through a real Dask cluster (joblib's dask backend) gives the local results."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest
from batch_fixtures import LABELS, SAMPLE_CALLS, make_model_folder

from callmood.batch.score import ScoreConfig, score_calls

distributed = pytest.importorskip("distributed")


def segments(out):
    table = ds.dataset(out / "segments", partitioning="hive").to_table()
    rows = table.drop_columns(["scored_at"]).to_pylist()
    return sorted(rows, key=lambda r: (r["call_id"], r["channel"], r["start_s"]))


def test_dask_cluster_run_equals_local_run(tmp_path):
    model = str(make_model_folder(tmp_path / "model"))
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
    for a, b in zip(expected, got, strict=True):
        assert {k: a[k] for k in a if not k.startswith("p_")} == \
            {k: b[k] for k in b if not k.startswith("p_")} or a["emotion"] == b["emotion"]
        assert all(abs(a[f"p_{label}"] - b[f"p_{label}"]) < 1e-4 for label in LABELS)
