"""The one-line progress bar that `reindex` and `verify` draw on a terminal (and plain lines elsewhere)."""

from __future__ import annotations

import sys
import time
from typing import IO


class ProgressBar:
    """`label [#####.....]  45%  4,500/10,000  1,234 rows/s  ETA 0:04` on stderr.

    On a terminal it redraws one line (at most 10 times a second); otherwise it prints a line every
    10% or 5 seconds, so logs stay readable.
    """

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: IO[str] | None = None, done: int = 0) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start_done = done
        self.done = done
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn_step = -1

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        step = int(self._fraction() * 10)
        if self.tty:
            if now - self._drawn_at >= 0.1:
                self._draw("\r", "")
                self._drawn_at = now
        elif step != self._drawn_step or now - self._drawn_at >= 5:
            self._draw("", "\n")
            self._drawn_at, self._drawn_step = now, step

    def finish(self) -> None:
        """The walk is complete: rows deleted meanwhile no longer count toward the total."""
        already_shown = not self.tty and self._drawn_step >= 10 and self.done == self.total
        self.total = self.done
        if not already_shown:
            self._draw("\r" if self.tty else "", "\n")

    def _fraction(self) -> float:
        if self.total <= 0:
            return 1.0
        return min(1.0, self.done / self.total)

    def line(self) -> str:
        fraction = self._fraction()
        filled = int(fraction * self.WIDTH)
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = (self.done - self.start_done) / elapsed
        left = max(0, self.total - self.done)
        eta = _clock(left / rate) if rate > 0 else "--:--"
        return (
            f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:5.1f}%  "
            f"{self.done:,}/{self.total:,} rows  {rate:,.0f} rows/s  "
            f"{'ETA ' + eta if left else 'took ' + _clock(elapsed)}"
        )

    def _draw(self, before: str, after: str) -> None:
        text = self.line()
        if self.tty:
            text = text.ljust(100)
        self.stream.write(before + text + after)
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
