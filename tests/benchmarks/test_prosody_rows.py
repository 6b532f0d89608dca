"""benchmarks/prosody_rows.py on a few real EmoDB utterances."""

import json
import subprocess
import sys

from conftest import REPO_DIR


def test_the_report_compares_the_rows_through_each_line(shared_dir, tmp_path):
    out = tmp_path / "prosody.json"
    done = subprocess.run([sys.executable, str(REPO_DIR / "benchmarks" / "prosody_rows.py"),
                           "--shared", str(shared_dir), "--corpora", "emodb",
                           "--per-corpus", "7", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["conditions"]) == {"telephone", "gsm", "unseen_narrow", "noise_snr10"}
    for condition in report["conditions"].values():
        emodb = condition["emodb"]
        assert 0 < emodb["utterances"] <= 7
        assert all(-1 <= emodb[key] <= 1 for key in ("rows_r", "log_mel_r", "ridge_kept",
                                                      "voiced_kept"))
    assert report["conditions"]["gsm"]["emodb"]["ridge_kept"] > 0.9  # a codec keeps pitch
    voices = report["harmonic_voices"]
    assert len(voices) == 16 and all(v["pitch_row_median"] > 0.85 for v in voices.values())
    assert all(v["above_max"] < 0.5 for v in voices.values())
