"""How job functions report progress and learn that they should stop, without printing or signals.

Every job function (prepare, train, infer, evaluate) takes `progress`, a callable that receives
`ProgressEvent`s, and reports through it only: a CLI plugs a console renderer into it (config.console),
a notebook or a web worker thread its own function. Nothing here prints.

An event is one fact about one phase of the work: `phase` names it ("train", "denoise", "decode video"),
`step` of `total` units are done (`total` None: not counted), `message` is a line for people (the stage of
training, what is being loaded) and `figures` holds numbers worth plotting (loss, learning rate, seconds).

Stopping is cooperative: a long job takes `stop`, a `threading.Event` or a callable returning True once the
caller wants it to end, and checks it where it can end cleanly (the trainer: after each step, then it writes
a checkpoint exactly as after SIGTERM). Signal handlers belong to the CLI's main thread, which sets the event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressEvent:
    """One report of a job function: `step` of `total` units of `phase` are done."""

    phase: str
    step: int = 0
    total: int | None = None
    message: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)
    unit: str = "step"

    @property
    def finished(self) -> bool:
        """The phase's last unit is done."""
        return self.total is not None and self.step >= self.total


Progress = Callable[[ProgressEvent], None]
StopSignal = threading.Event | Callable[[], bool]


def as_progress(progress: object) -> Progress | None:
    """`progress` as a callback: a callable is one; None or False is none; a tqdm-like bar (`update`,
    `set_postfix`) is advanced step by step, for scripts written before events existed."""
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    if hasattr(progress, "update"):
        return _BarProgress(progress)
    raise TypeError(f"progress must be a callable taking ProgressEvents (e.g. config.console.ConsoleProgress()), "
                    f"not {progress!r}")


class _BarProgress:
    """Drives a tqdm-like bar from events (one bar: the events' phases are not told apart)."""

    def __init__(self, bar: object) -> None:
        self.bar, self.last = bar, None

    def __call__(self, event: ProgressEvent) -> None:
        if self.last is not None and event.step > self.last:
            self.bar.update(event.step - self.last)
            if hasattr(self.bar, "set_postfix"):
                self.bar.set_postfix(**({"stage": event.message} if event.message else {}),
                                     **{k: f"{v:.4f}" for k, v in event.figures.items()})
        self.last = event.step


def report(progress: Progress | None, phase: str, step: int = 0, total: int | None = None, message: str = "",
           unit: str = "step", **figures: float) -> None:
    """Send one event to `progress` (nothing when it is None or False)."""
    if progress is not None and progress is not False:
        progress(ProgressEvent(phase, step, total, message, figures, unit))


def tracked(items: Iterable[T], progress: Progress | None, phase: str, total: int | None = None,
            unit: str = "step") -> Iterator[T]:
    """Yield `items`, reporting `phase` after each one (and step 0 before the first)."""
    if progress is None or progress is False:
        yield from items
        return
    report(progress, phase, 0, total, unit=unit)
    for i, item in enumerate(items, 1):
        yield item
        report(progress, phase, i, total, unit=unit)


class Steps:
    """Counts done units of one phase and reports them, for loops that count by hand (`update(n)`)."""

    def __init__(self, progress: Progress | None, phase: str, total: int | None = None, unit: str = "step") -> None:
        self.progress, self.phase, self.total, self.unit, self.done = progress, phase, total, unit, 0
        report(progress, phase, 0, total, unit=unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        report(self.progress, self.phase, self.done, self.total, unit=self.unit)

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def stop_requested(stop: StopSignal | None) -> bool:
    """Whether the caller asked the job to stop (`stop` is an Event, a callable or None)."""
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())
