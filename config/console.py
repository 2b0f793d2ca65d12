"""The entry points' progress display: job functions report `ProgressEvent`s, this renders them on stderr.

On a terminal each phase gets a tqdm bar. When stderr is not a terminal (a cluster job's log file, a pipe)
a bar's carriage-return redraws would pile up into one enormous line, so each phase prints a plain line
every few steps instead (about `lines` lines over the phase, plus its first and last step) with the
elapsed time, the rate and the latest figures. `--quiet` (quiet=True) prints nothing; events that carry only
a message are printed as one line.

Also here: `one_line_warnings` (Python warnings as one `warning: ...` line each) and `quiet_torchvision_notice`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from config.progress import ProgressEvent

DEFAULT_LINES = 20  # non-terminal output: about this many lines per phase


def _figures(event: ProgressEvent) -> str:
    parts = [event.message] if event.message else []
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.figures.items()]
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


class ConsoleProgress:
    """A `Progress` callback for the CLIs (see the module doc). Call `close()` when the job returns."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, interactive: bool | None = None,
                 lines: int = DEFAULT_LINES) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty()) if interactive is None else interactive
        self.lines = max(1, lines)
        self._bars: dict[str, object] = {}
        self._logged: dict[str, tuple[int, int | None, float]] = {}  # phase -> (start step, last printed, start time)

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.total is None and event.step == 0 and event.message and not event.figures:
            self.write(f"{event.phase}: {event.message}")
        elif self.interactive:
            self._bar(event)
        else:
            self._line(event)

    def write(self, text: str) -> None:
        """One line on the stream, above any bar."""
        if self.quiet:
            return
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    # -- terminal ---------------------------------------------------------------------------------
    def _bar(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        bar = self._bars.get(event.phase)
        if bar is None:
            bar = tqdm(total=event.total, initial=event.step, desc=event.phase, unit=event.unit, file=self.stream,
                       dynamic_ncols=True, leave=False)
            self._bars[event.phase] = bar
        if event.total != bar.total:
            bar.total = event.total
        bar.update(event.step - bar.n)
        postfix = _figures(event)
        if postfix:
            bar.set_postfix_str(postfix, refresh=False)
        if event.finished:
            bar.close()
            del self._bars[event.phase]

    # -- log files --------------------------------------------------------------------------------
    def _every(self, total: int | None) -> int:
        return max(1, math.ceil(total / self.lines)) if total else 10

    def _line(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.phase not in self._logged:  # the phase starts here: nothing done yet to report
            self._logged[event.phase] = (event.step, None, now)
            if not event.finished:
                return
        first, last, start = self._logged[event.phase]
        every = self._every(event.total)
        due = event.finished or (last is None and event.step > first) or (
            last is not None and event.step // every > last // every)  # crossed a multiple of `every`
        if not due:
            return
        self._logged[event.phase] = (first, event.step, start)
        done = event.step - first
        count = f"{event.step}/{event.total}" if event.total else f"{event.step}"
        text = f"{event.phase}: {count} {event.unit}s"
        if event.total:
            text += f" ({event.step / event.total:.0%})"
        elapsed = now - start
        text += f", {_duration(elapsed)}"
        if done > 0 and elapsed > 0:
            rate = elapsed / done
            text += f", {rate:.2f} s/{event.unit}" if rate >= 0.1 else f", {1 / rate:.1f} {event.unit}s/s"
            if event.total and not event.finished:
                text += f", about {_duration(rate * (event.total - event.step))} left"
        if figures := _figures(event):
            text += f"; {figures}"
        print(text, file=self.stream, flush=True)
        if event.finished:
            del self._logged[event.phase]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._logged.clear()


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def quiet_torchvision_notice() -> None:
    """Drop transformers' 'CLIPImageProcessor requires torchvision' notice: the project avoids torchvision on
    purpose (see NOTES), so the advice is wrong here, and it would be a stray line before every error."""
    log = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionNotice) for f in log.filters):
        log.addFilter(_DropTorchvisionNotice())


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings as one `warning: ...` line on stderr each (not file:line plus source), while inside."""
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
    try:
        yield
    finally:
        warnings.showwarning = previous
