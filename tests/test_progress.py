"""Progress in a log file: whole timestamped lines, at most one per interval, always the last."""

import io
import re

from callmood.progress import progress


def test_off_a_terminal_progress_is_whole_timestamped_lines():
    log = io.StringIO()  # not a terminal, as a nightly job's log file is not
    for _ in progress(range(40), desc="log-mel features", unit="file", file=log, log_every=0):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert all(re.match(r"\d\d:\d\d:\d\d log-mel features: ", line) for line in lines), lines
    assert "40/40" in lines[-1] and "100%" in lines[-1]
    assert "40/40" not in lines[-2], "the final count is written once"


def test_a_long_interval_keeps_the_log_short_but_still_ends_with_the_total():
    log = io.StringIO()
    with progress(total=1000, desc="scoring", file=log, log_every=3600) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) <= 2 and "1000/1000" in lines[-1]


def test_disabled_progress_writes_nothing():
    log = io.StringIO()
    for _ in progress(range(5), file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_a_changing_postfix_does_not_write_a_line_per_step():
    log = io.StringIO()
    bar = progress(range(200), desc="epoch 1/6", file=log, log_every=3600)
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")  # as the training loop does per batch
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 2 and "200/200" in lines[-1] and "loss=" in lines[-1]


def test_a_bar_that_slows_down_never_logs_a_stale_count(monkeypatch):
    """tqdm's monitor thread redraws a quiet bar; in a log that must not repeat an old count."""
    import time

    from callmood import progress as module

    # a monitor of its own that looks every 50 ms (tqdm's looks every 10 s)
    monkeypatch.setattr(module._LogTqdm, "monitor_interval", 0.05)
    monkeypatch.setattr(module._LogTqdm, "monitor", None)
    log = io.StringIO()
    bar = progress(range(400), desc="epoch 1/6", file=log, log_every=0.2)
    try:
        for step in bar:
            time.sleep(0.001 if step < 300 else 0.02)  # fast batches, then slow ones
    finally:
        if module._LogTqdm.monitor is not None:
            module._LogTqdm.monitor.exit()
    counts = [int(re.search(r"(\d+)/400", line).group(1))
              for line in log.getvalue().splitlines()]
    assert counts[-1] == 400 and len(counts) > 3
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts
