"""Rich progress bars with a rate in the work's own unit, and ETA; plain lines for a log.

A command shows one display. `pipeline()` opens a display that the steps inside it share: each
step's `make_progress` adds its bar below the pipeline's own, instead of opening another. When
the output is no terminal (CI logs, `| tee`), bars cannot be redrawn and would be printed once,
cut to the width rich assumes; whole lines come instead, now and then (PlainProgress).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)
_shared: Progress | PlainProgress | None = None  # the display of the pipeline running now, if any
# Without a terminal a task prints a line when another tenth of it is done, when it ends, and
# at least this often in between: a 10-minute run logs 20 to 30 lines, not one per step.
PLAIN_EVERY_S = 30.0
PLAIN_EVERY_SHARE = 0.1


class CountColumn(ProgressColumn):
    """done/total and the rate, in the task's unit; nothing for a time budget (no unit)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        if not unit or task.total is None:
            return Text("")
        speed = task.finished_speed or task.speed
        rate = "-" if speed is None else _amount(speed)
        return Text(f"{int(task.completed)}/{int(task.total)} {rate} {unit}/s", style="progress.data.speed")


def _amount(x: float) -> str:
    return next((f"{x / d:,.1f}{s}" for d, s in ((1e6, "M"), (1e3, "k")) if x >= d), f"{x:,.1f}")


@dataclass
class PlainTask:
    description: str
    total: float | None
    unit: str | None  # None: the total is a time budget in seconds
    start: float
    completed: float = 0.0
    printed_at: float = 0.0  # when its last line was printed (clock seconds)
    printed: tuple[str, float, float | None] = ("", 0.0, None)  # what it showed
    ended: bool = False  # its line at completed == total is out

    @property
    def pending(self) -> bool:
        """Changed since its last line."""
        return (self.description, self.completed, self.total) != self.printed


class PlainProgress:
    """The display's interface for a log: a whole line per task now and then, never a redraw."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.tasks: list[PlainTask] = []
        self._clock = clock

    def add_task(
        self, description: str, total: float | None = None, unit: str | None = None, **_: Any
    ) -> TaskID:
        now = self._clock()
        self.tasks.append(PlainTask(description, total, unit, start=now, printed_at=now))
        return TaskID(len(self.tasks) - 1)

    def advance(self, task: TaskID, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: TaskID, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **_: Any) -> None:
        t = self.tasks[task]
        t.total = t.total if total is None else total
        t.completed = t.completed if completed is None else completed
        t.completed += advance or 0
        t.description = t.description if description is None else description
        now = self._clock()
        done = t.total is not None and t.completed >= t.total
        tenth = t.total is not None and t.completed - t.printed[1] >= PLAIN_EVERY_SHARE * t.total
        if t.pending and ((done and not t.ended) or tenth or now - t.printed_at >= PLAIN_EVERY_S):
            t.ended = t.ended or done
            self._print(t, now)

    def finish(self) -> None:
        """The last state of every task that changed since its last line."""
        for t in self.tasks:
            if t.pending:
                self._print(t, self._clock())

    def _print(self, t: PlainTask, now: float) -> None:
        t.printed_at, t.printed = now, (t.description, t.completed, t.total)
        elapsed = now - t.start
        parts = [t.description]
        share = t.completed / t.total if t.total else None
        if t.unit:
            done = f"{int(t.completed):,}" + (f"/{int(t.total):,}" if t.total is not None else "")
            rate = f", {_amount(t.completed / elapsed)} {t.unit}/s" if elapsed > 0 else ""
            parts.append(f"{done} {t.unit}{rate}")
        elif share is not None:
            parts.append(f"{min(share, 1.0):.0%}")
        times = f"{_clock_text(elapsed)} elapsed"
        if share:
            times += f", eta {_clock_text(max(elapsed / share - elapsed, 0.0))}"
        console.print(" | ".join([*parts, times]), soft_wrap=True, highlight=False, markup=False)


def _clock_text(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def _new_progress() -> Progress | PlainProgress:
    # Asked now, not when the console was made: a test or a caller may have redirected stderr.
    if not (console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)):
        return PlainProgress()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class StepProgress:
    """What a step sees: add_task/advance/update on the display, its tasks tagged with its unit."""

    def __init__(self, progress: Progress | PlainProgress, unit: str | None) -> None:
        self.progress, self.unit = progress, unit

    def add_task(self, description: str, **kw: Any) -> TaskID:
        return self.progress.add_task(description, unit=self.unit, **kw)

    def advance(self, task: TaskID, advance: float = 1) -> None:
        self.progress.advance(task, advance)

    def update(self, task: TaskID, **kw: Any) -> None:
        self.progress.update(task, **kw)


@contextmanager
def make_progress(unit: str | None) -> Iterator[StepProgress]:
    """A live progress display that vanishes if the work fails, leaving only the error line.

    unit names what is counted, for the rate; None when the total is a time budget.
    """
    if _shared is not None:
        yield StepProgress(_shared, unit)
        return
    with _displayed(_new_progress()) as progress:
        yield StepProgress(progress, unit)


@contextmanager
def pipeline(description: str, steps: int) -> Iterator[tuple[StepProgress, TaskID]]:
    """One display for several steps: a bar for the pipeline, and each step's bars under it."""
    global _shared
    with _displayed(_new_progress()) as progress:
        _shared = progress
        try:
            yield StepProgress(progress, "steps"), progress.add_task(description, total=steps, unit="steps")
        finally:
            _shared = None


@contextmanager
def _displayed(progress: Progress | PlainProgress) -> Iterator[Progress | PlainProgress]:
    if isinstance(progress, PlainProgress):
        yield progress
        progress.finish()  # not after a failure: the error line is the last word
        return
    with progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise
