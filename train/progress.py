"""Rich progress bars with a rate in the work's own unit, and ETA.

A command shows one display. `pipeline()` opens a display that the steps inside it share: each
step's `make_progress` adds its bar below the pipeline's own, instead of opening another.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
_shared: Progress | None = None  # the display of the pipeline running now, if any


class CountColumn(ProgressColumn):
    """done/total and the rate, in the task's unit; nothing for a time budget (no unit)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        if not unit or task.total is None:
            return Text("")
        speed = task.finished_speed or task.speed
        rate = "-" if speed is None else next(
            (f"{speed / d:,.1f}{s}" for d, s in ((1e6, "M"), (1e3, "k")) if speed >= d), f"{speed:,.1f}")
        return Text(f"{int(task.completed)}/{int(task.total)} {rate} {unit}/s", style="progress.data.speed")


def _new_progress() -> Progress:
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

    def __init__(self, progress: Progress, unit: str | None) -> None:
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
def _displayed(progress: Progress) -> Iterator[Progress]:
    with progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise
