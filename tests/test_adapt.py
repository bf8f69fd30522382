"""`codecomplete-train adapt`: a tiny checkpoint fine-tuned on a tiny git project for a few steps.

The editor commands (the server's codecomplete.adapt) are covered by the Neovim plugin test and the
VS Code end-to-end test.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import synthetic_module
from test_lsp import Checkpoints, checkpoints  # noqa: F401 - the session's tiny checkpoints
from typer.testing import CliRunner

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.train.adapt import STATE_FILE, AdaptConfig, EarlyStop, StoppedEarly
from codecomplete.train.cli import app, main

runner = CliRunner()
OLD, NEW = [f"pkg/mod{i}.py" for i in range(10)], ["pkg/new0.py", "pkg/new1.py"]
# Fast enough for tests: a few steps, evaluations every few, a handful of comparison cases.
QUICK = ["--eval-every", "10", "--eval-cases", "4", "--device", "cpu"]


def git(root: Path, *args: str, date: str = "2020-01-01T00:00:00") -> None:
    env = os.environ | {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root, env=env, check=True,
                   capture_output=True)


def write_modules(folder: Path, names: list[str], seed: int) -> None:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(synthetic_module(random.Random(seed + i)))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository: ten modules committed in 2020, two more in 2024 (the newest, so the held-out
    ones), and what a project walk skips: a virtual environment, site-packages, build output and a
    .gitignored file."""
    root = tmp_path_factory.mktemp("adapt") / "proj"
    write_modules(root, OLD, 100)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "old")
    write_modules(root, NEW, 200)
    git(root, "add", ".")
    git(root, "commit", "-qm", "new", date="2024-01-01T00:00:00")
    (root / "env").mkdir()
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for skipped in ("env/lib/dep.py", "vendor/site-packages/dep.py", "build/lib/gen.py", "scratch.py"):
        write_modules(root, [skipped], 300)
    (root / ".gitignore").write_text("scratch.py\n")
    write_modules(root.parent / "general", ["a.py", "b.py", "c.py"], 400)
    return root


def adapt(*args: Any) -> Any:
    result = runner.invoke(app, ["adapt", *map(str, args)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def adapted(project: Path, checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    out = tmp_path_factory.mktemp("runs") / "proj"
    # Without replay: the tiny checkpoint learns a tiny project in 40 steps only from whole batches of it.
    result = adapt(project, "--out", out, "--from", checkpoints.a, "--max-steps", 40, "--lr", "2e-3", "--patience", 100,
                   "--general", project.parent / "general", "--replay", 0, *QUICK)
    return {"out": out, "output": result.output, "state": json.loads((out / STATE_FILE).read_text())}


def records(out: Path, event: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_the_adapted_checkpoint_loads_keeps_the_base_tokenizer_and_shape_and_learned(adapted: dict[str, Any],
                                                                                     checkpoints: Checkpoints) -> None:  # noqa: F811
    best = adapted["out"] / "best"
    tuned, base = load_checkpoint(best), load_checkpoint(checkpoints.a)
    assert (best / "tokenizer.json").read_bytes() == (checkpoints.a / "tokenizer.json").read_bytes()
    assert tuned.model.config == base.model.config
    losses = [r["val_loss"] for r in records(adapted["out"], "eval")]
    assert len(losses) == 4 and min(losses) < losses[0]  # the held-out loss falls
    assert f'"codecomplete.checkpoint": "{best.resolve()}"' in adapted["output"]
    trained = adapted["state"]["trained"]
    assert trained["step"] == 40 and not trained["stopped_early"] and trained["best_heldout_loss"] < trained["base_heldout_loss"]


def test_by_default_half_of_each_batch_replays_the_standard_library_but_never_the_general_set(
        project: Path, checkpoints: Checkpoints, tmp_path: Path) -> None:  # noqa: F811
    from codecomplete.train.adapt_eval import general_documents
    from codecomplete.train.corpus import iter_documents

    out = tmp_path / "run"
    adapt(project, "--out", out, "--from", checkpoints.a, "--max-steps", 2, "--eval-every", 2, "--eval-cases", 0, "--device", "cpu")
    config = json.loads((out / "train_config.json").read_text())
    assert config["replay"] == 0.5 and Path(config["replay_data"]) == out / "replay"
    replayed = {d.path for d in iter_documents(out / "replay-corpus")}
    _, general = general_documents(None)  # what the comparison evaluates on without --general
    assert len(replayed) >= 2 and not replayed & {name for name, _ in general}
    assert json.loads((out / "replay" / "meta.json").read_text())["splits"]["train"]["tokens"] > 10_000


def test_blend_averages_the_fine_tuned_weights_with_the_base_once(project: Path, checkpoints: Checkpoints,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from codecomplete.train.adapt import blend_with_base, inherit_completion

    out = tmp_path / "run"
    result = adapt(project, "--out", out, "--from", checkpoints.a, "--max-steps", 2, "--eval-every", 2, "--lr", "2e-3",
                   "--eval-cases", 0, "--replay", 0, "--blend", 0.5, "--general", project.parent / "general", "--device", "cpu")
    assert "written blended: 0.5 of the fine-tuned weights" in result.output
    best, last, base = (load_file(p / "model.safetensors") for p in (out / "best", out / "last", checkpoints.a))
    assert best.keys() == base.keys() and any(not torch.equal(last[k], base[k]) for k in base)
    for name in base:  # one evaluation, at the last step: best held last's weights before the blend
        torch.testing.assert_close(best[name], (last[name] + base[name]) / 2)
    assert load_checkpoint(out / "best").provenance["adapt"]["blend"] == 0.5
    blend_with_base(out / "best", str(checkpoints.a), 0.5)  # what a rerun does: nothing more
    assert all(torch.equal(w, best[k]) for k, w in load_file(out / "best" / "model.safetensors").items())

    tuned = Path(shutil.copytree(out / "last", tmp_path / "tuned"))  # engine settings tuned for the weights stay
    inherit_completion(tuned, {"context_weight": 0.25})
    blend_with_base(tuned, str(checkpoints.a), 0.7)
    assert load_checkpoint(tuned).completion == {"context_weight": 0.25}


def test_the_newest_files_by_git_history_are_held_out_and_ignored_paths_skipped(adapted: dict[str, Any]) -> None:
    from codecomplete.train.corpus import iter_documents

    split = adapted["state"]["split"]
    assert split["by"] == "recency" and sorted(split["files"]) == [f"local/proj/{p}" for p in NEW]
    assert sorted(d.path for d in iter_documents(adapted["out"] / "corpus")) == sorted(OLD + NEW)
    meta = json.loads((adapted["out"] / "data" / "meta.json").read_text())
    assert meta["splits"]["val"]["documents"] == 2 and meta["splits"]["train"]["documents"] == 10


def test_the_comparison_shows_base_adapted_and_baseline_on_both_sets(adapted: dict[str, Any]) -> None:
    comparison = adapted["state"]["comparison"]
    assert set(comparison["project"]["line"]) == {"base", "adapted", "n-gram"}
    assert set(comparison["general"]["line"]) == {"base", "adapted"} and comparison["general"]["documents"] == 3
    assert comparison["project"]["line"]["base"]["cases"] == 4 and "bits per byte" in adapted["output"]


def test_provenance_names_the_base_and_the_project_without_machine_paths(adapted: dict[str, Any]) -> None:
    provenance = json.loads((adapted["out"] / "best" / "config.json").read_text())["provenance"]
    assert provenance["adapt"]["project"] == ["proj"] and provenance["adapt"]["heldout_files"] == 2
    assert provenance["adapt"]["blend"] == AdaptConfig.blend < 1  # written blended unless --blend 1
    assert f"written blended: {AdaptConfig.blend:g} of the fine-tuned weights" in adapted["output"]
    assert provenance["adapt"]["base"] == provenance["init_from"] and provenance["data"] == "data"

    def strings(x: Any) -> list[str]:
        return [x] if isinstance(x, str) else [s for v in (x.values() if isinstance(x, dict) else x) for s in strings(v)] \
            if isinstance(x, (dict, list)) else []

    assert not [s for s in strings(provenance) if Path(s).is_absolute()]


def test_running_it_again_trains_nothing_more(adapted: dict[str, Any], project: Path) -> None:
    before = (adapted["out"] / "metrics.jsonl").read_text()
    result = adapt(project, "--out", adapted["out"], "--device", "cpu")
    assert "holds a finished adaptation" in result.output and "line exact match" in result.output
    assert (adapted["out"] / "metrics.jsonl").read_text() == before


def test_a_run_from_before_blend_is_not_blended_when_run_again(adapted: dict[str, Any], project: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    out = Path(shutil.copytree(adapted["out"], tmp_path / "old"))
    for path, keys in ((out / STATE_FILE, ("config",)), (out / "best" / "config.json", ("provenance", "adapt"))):
        saved = json.loads(path.read_text())
        inner = saved
        for key in keys:
            inner = inner[key]
        del inner["blend"]  # written before adapt had --blend: the fine-tuned weights as they were
        path.write_text(json.dumps(saved))
    weights = load_file(out / "best" / "model.safetensors")
    adapt(project, "--out", out, "--device", "cpu")
    assert all(torch.equal(w, weights[k]) for k, w in load_file(out / "best" / "model.safetensors").items())


def test_a_moved_run_resumes_where_it_is_now(adapted: dict[str, Any], project: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(adapted["out"], tmp_path / "moved"))
    before = {p: p.stat().st_mtime_ns for p in adapted["out"].rglob("*")}
    result = adapt(project, "--out", moved, "--device", "cpu")
    assert json.loads((moved / STATE_FILE).read_text())["config"]["out"] == str(moved)
    assert f'"codecomplete.checkpoint": "{(moved / "best").resolve()}"' in result.output
    assert {p: p.stat().st_mtime_ns for p in adapted["out"].rglob("*")} == before  # the old place is left alone


def test_early_stopping_stops(project: Path, checkpoints: Checkpoints, tmp_path: Path) -> None:  # noqa: F811
    # A learning rate too small to move the loss by min_delta: no evaluation beats the base model's
    # own held-out loss, and patience 2 ends the run at the second evaluation, step 2 x 2.
    result = adapt(project, "--out", tmp_path / "run", "--from", checkpoints.a, "--max-steps", 100, "--lr", "1e-9",
                   "--eval-every", 2, "--patience", 2, "--eval-cases", 0, "--general", project.parent / "general", "--device", "cpu")
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["trained"]["step"] == 4 and state["trained"]["stopped_early"] and "stopped early at step 4" in result.output
    assert "no evaluation beat the base model's held-out loss" in result.output


def test_patience_counts_the_evaluations_made_before_a_restart(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"event": "eval", "step": s, "val_loss": v}) + "\n" for s, v in ((10, 2.0), (20, 2.5))))
    stop = EarlyStop(patience=2, min_delta=1e-3).replay(metrics)
    assert (stop.best, stop.since_best) == (2.0, 1)
    with pytest.raises(StoppedEarly):
        stop({"event": "eval", "step": 30, "val_loss": 2.0})


def error_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: Any) -> str:
    monkeypatch.setattr(sys, "argv", ["codecomplete-train", "adapt", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def other_tokenizer_checkpoint(root: Path) -> Path:
    from codecomplete.engine.checkpoint import save_checkpoint
    from codecomplete.engine.model import GPT, config_from_preset
    from codecomplete.train.tokenizer_train import train_tokenizer

    tok = train_tokenizer(["x = 1\n" * 50, "def f():\n    return 2\n" * 30], 300)
    return save_checkpoint(root, GPT(config_from_preset("tiny", tok.vocab_size)), tok)


@pytest.mark.parametrize("case, expected", [
    ("no Python", "no .py files under"),
    ("not a checkpoint", "lacks config.json"),
    ("swapped tokenizer", "is not the one this model was trained with"),
    ("no minutes", "--minutes 0.0 is out of range"),
    ("no blend", "--blend 0.0 is out of range"),
])
def test_bad_input_is_one_line_and_writes_nothing(case: str, expected: str, project: Path, checkpoints: Checkpoints,  # noqa: F811
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, base, more = project, checkpoints.a, []
    if case == "no Python":  # Python only inside a virtual environment, which a project walk skips
        folder = tmp_path / "docs"
        write_modules(folder, ["venv/lib/x.py"], 0)
        (folder / "venv" / "pyvenv.cfg").write_text("")
    elif case == "not a checkpoint":
        base = tmp_path / "notes"
        base.mkdir()
        (base / "todo.txt").write_text("not a model")
    elif case == "swapped tokenizer":
        base = Path(shutil.copytree(checkpoints.a, tmp_path / "swapped"))
        shutil.copy(other_tokenizer_checkpoint(tmp_path / "other") / "tokenizer.json", base / "tokenizer.json")
    elif case == "no minutes":
        more = ["--minutes", "0"]
    else:
        more = ["--blend", "0"]
    line = error_line(capsys, monkeypatch, folder, "--out", tmp_path / "out", "--from", base, *more)
    assert expected in line and not (tmp_path / "out").exists()


def test_resuming_from_a_base_with_another_tokenizer_is_refused(adapted: dict[str, Any], project: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = Path(shutil.copytree(adapted["out"], tmp_path / "run"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    line = error_line(capsys, monkeypatch, project, "--out", out, "--from", other_tokenizer_checkpoint(tmp_path / "other"))
    assert "has another tokenizer than the one" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
