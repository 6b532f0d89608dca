"""Progress of long work: a live bar on a terminal, a plain dated line now and then in a log.

tqdm redraws one line with carriage returns, so a nightly job writing to a log file either
shows nothing (tqdm's own "only on a terminal") or one endless line. Off a terminal, `progress`
keeps tqdm's figures (done/total, rate, elapsed<remaining) but writes them as whole lines, at
most one per `log_every` seconds, which `tail -f` and a log collector read as they are.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

LOG_EVERY_S = 30.0


class _LogLines:
    """A stream for tqdm that turns each redraw into one finished, timestamped line."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogTqdm(tqdm):
    """A postfix change waits for the next line instead of writing one of its own (tqdm's
    default redraws at once, which in a log is a line per training batch)."""

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def close(self) -> None:
        # tqdm writes the final count on close; when the last line already shows it, the
        # log would end with the same line twice
        if not self.disable and getattr(self, "last_print_n", None) == self.n:
            self.leave = False
        super().close()


def progress(iterable: Any = None, *, disable: bool | None = None, file: IO[str] | None = None,
             log_every: float = LOG_EVERY_S, **kwargs: Any) -> tqdm:
    """tqdm on `file` (default stderr): a bar on a terminal, lines every `log_every` s elsewhere.

    disable: True shows nothing; None and False show progress wherever it goes.
    """
    stream = file or sys.stderr
    if disable or stream.isatty():
        return tqdm(iterable, file=stream, disable=bool(disable), **kwargs)
    # the last update always prints, on close; leave=False would then erase nothing useful
    kwargs.pop("leave", None)
    # miniters=1: check the clock on every step. With tqdm's adaptive skipping, its monitor
    # thread redraws a bar that has been quiet too long, from its last synced count, so the
    # log got a stale line beside the current one.
    return _LogTqdm(iterable, file=_LogLines(stream), mininterval=log_every,
                    maxinterval=log_every, miniters=1, ascii=True, ncols=100, **kwargs)
