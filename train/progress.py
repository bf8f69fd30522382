"""Rich progress bars with a rate in the work's own unit, and ETA."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        scaled, suffix = next(((speed / d, s) for d, s in ((1e6, "M"), (1e3, "k")) if speed >= d), (speed, ""))
        return Text(f"{scaled:,.1f}{suffix} {self.unit}/s", style="progress.data.speed")


@contextmanager
def make_progress(unit: str | None) -> Iterator[Progress]:
    """A live progress display that vanishes if the work fails, leaving only the error line.

    unit names what is counted, for the rate column; None when the total is a time budget.
    """
    counts = [MofNCompleteColumn(), RateColumn(unit)] if unit else []
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise
