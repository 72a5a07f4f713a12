"""A progress bar on stderr for long command-line runs (standard library only).

    bar = ProgressBar(sys.stderr, interactive=sys.stderr.isatty())
    collector = SnapshotCollector(..., progress=bar)    # called with (devices_done, devices_total)
    ...
    bar.finish()

On a terminal the bar redraws one line in place, at most ten times a second. Elsewhere
(a log file, a CI job, `--progress` with stderr redirected) it writes a plain line at
every tenth of the way instead, so the output stays readable. Writing never raises: a
closed or broken stderr must not abort a collection that has run for an hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TextIO


def format_duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


@dataclass(eq=False)
class ProgressBar:
    stream: TextIO | Callable[[], TextIO]  # or what returns the current one (sys.stderr may be swapped)
    _: KW_ONLY
    interactive: bool
    label: str = "devices"
    width: int = 28
    min_interval: float = 0.1  # seconds between two redraws on a terminal
    clock: Callable[[], float] = time.monotonic
    _started: float | None = field(default=None, init=False)  # when the first (0, total) came in
    _last_draw: float = field(default=float("-inf"), init=False)
    _drawn: int = field(default=0, init=False)  # characters on the current line (interactive)
    _tenths: int = field(default=-1, init=False)  # last tenth written (non-interactive)
    _state: tuple[int, int] | None = field(default=None, init=False)
    _finished: bool = field(default=False, init=False)

    # -- the collector's callback ---------------------------------------------

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        self._state = (done, total)
        if self.interactive:
            if done >= total or now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self._redraw(self.render(done, total, now))
        else:
            tenths = 10 if total <= 0 else min(10, done * 10 // total)
            if tenths > self._tenths:
                self._tenths = tenths
                self._write(self.render(done, total, now) + "\n")

    # -- other phases -----------------------------------------------------------

    def status(self, text: str) -> None:
        """A phase before the bar can start (reading the device list, Prism apps)."""
        if self.interactive:
            self._redraw(f"{self.label}: {text}")
        else:
            self._write(f"{self.label}: {text}\n")

    def clear(self) -> None:
        """Erase the bar (before something else is written to the same stream); the next update redraws it."""
        if self.interactive and self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
            self._last_draw = float("-inf")

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._finished:
            return
        self._finished = True
        if self._state is not None:
            done, total = self._state
            if self.interactive:
                self._redraw(self.render(done, total, self.clock()))
            elif self._tenths < 10 or done < total:
                self._write(self.render(done, total, self.clock()) + "\n")
        if self.interactive and self._drawn:
            self._write("\n")
            self._drawn = 0

    # -- drawing -----------------------------------------------------------------

    def render(self, done: int, total: int, now: float) -> str:
        fraction = 1.0 if total <= 0 else min(1.0, done / total)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = now - (self._started if self._started is not None else now)
        text = f"{self.label} [{bar}] {done:,}/{total:,} {fraction:4.0%}  {format_duration(elapsed)}"
        if 0 < done < total and elapsed > 0:
            text += f"  ETA {format_duration(elapsed / done * (total - done))}"
        return text

    def _redraw(self, text: str) -> None:
        padding = " " * max(0, self._drawn - len(text))
        self._write("\r" + text + padding)
        self._drawn = len(text)

    def _write(self, text: str) -> None:
        stream = self.stream() if callable(self.stream) else self.stream
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or file: lose the bar, never the run
            pass
