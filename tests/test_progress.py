"""Progress displays: rich bars in a terminal, whole lines now and then in a log (CI, `| tee`)."""
from __future__ import annotations

import pytest
from rich.progress import Progress

from codecomplete.train import progress as progress_module
from codecomplete.train.progress import PlainProgress, make_progress, pipeline


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_without_a_terminal_a_long_run_prints_whole_lines_at_a_sensible_rate(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    plain = PlainProgress(clock)
    task = plain.add_task("train", total=1000, unit="steps")
    for step in range(1, 1001):  # one step a second: a line every 30 s, not one per step
        clock.now += 1
        plain.update(task, completed=step, description=f"train loss {5 - step / 1000:.3f}")
    plain.finish()
    out = lines(capsys)
    assert 30 <= len(out) <= 35
    assert out[0] == "train loss 4.970 | 30/1,000 steps, 1.0 steps/s | 0:00:30 elapsed, eta 0:16:10"
    assert out[-1] == "train loss 4.000 | 1,000/1,000 steps, 1.0 steps/s | 0:16:40 elapsed, eta 0:00:00"
    assert all("…" not in line and "━" not in line for line in out)


def test_fast_work_prints_a_line_a_tenth_and_time_budgets_a_share(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    plain = PlainProgress(clock)
    files = plain.add_task("collect", total=5000, unit="files")
    for _ in range(5000):
        plain.advance(files)
    budget = plain.add_task("train", total=600)  # --minutes 10: no unit, the total is seconds
    clock.now = 150
    plain.update(budget, completed=150)
    clock.now = 151
    plain.update(budget, completed=151, description="train loss 3.210")  # too soon for a line
    plain.finish()  # ...but the last state is printed at the end
    out = lines(capsys)
    assert [line.split(" | ")[1] for line in out[:10]] == [f"{n * 500:,}/5,000 files" for n in range(1, 11)]
    assert out[10:] == ["train | 25% | 0:02:30 elapsed, eta 0:07:30", "train loss 3.210 | 25% | 0:02:31 elapsed, eta 0:07:29"]


def test_the_display_is_plain_in_a_log_and_rich_in_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pipeline("quickstart", 2) as (steps, overall), make_progress("docs") as inner:
        assert isinstance(steps.progress, PlainProgress) and inner.progress is steps.progress  # one shared display
        task = inner.add_task("prepare", total=3)
        inner.advance(task, 3)
        steps.update(overall, description="quickstart 2/2: train")
        steps.advance(overall, 2)
    out = lines(capsys)
    assert [line.split(" | ")[:2][0] for line in out] == ["prepare", "quickstart 2/2: train"]
    assert out[0].split(" | ")[1].startswith("3/3 docs") and out[1].split(" | ")[1].startswith("2/2 steps")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(progress_module.console, "_force_terminal", True)
    assert isinstance(progress_module._new_progress(), Progress)


def test_a_failed_step_adds_no_line_after_its_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), make_progress("docs") as p:
        task = p.add_task("prepare", total=10)
        p.advance(task, 0.5)
        raise RuntimeError("bad input")
    assert lines(capsys) == []
