"""The README's commands, run as a user runs them."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_python_tree
from typer.testing import CliRunner

from codecomplete.train.cli import app

runner = CliRunner()
COMMANDS = ["collect", "tokenizer", "prepare", "train", "sample", "quickstart", "eval", "baseline", "report"]


def invoke(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codecomplete.train.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_its_options(command: str) -> None:
    out = invoke(command, "--help")
    assert "--" in out and "Usage" in out


def test_the_five_readme_commands_end_to_end(tmp_path: Path, code_tree: Path) -> None:
    corpus, tok, data, run = tmp_path / "corpus", tmp_path / "runs" / "tok.json", tmp_path / "data", tmp_path / "runs" / "t"
    invoke("collect", code_tree, "--out", corpus)
    assert list(corpus.glob("shard-*.parquet"))
    invoke("tokenizer", corpus, "--out", tok, "--vocab-size", 400)
    invoke("prepare", corpus, "--tokenizer", tok, "--out", data, "--val-fraction", 0.2)
    invoke("train", data, "--out", run, "--preset", "tiny", "--max-steps", 4, "--block-size", 32, "--batch-size", 2, "--eval-tokens", 128, "--device", "cpu")
    assert (run / "best" / "model.safetensors").is_file() and (run / "last" / "config.json").is_file()
    out = invoke("sample", run / "best", "--prompt", "def read_json(path):", "--n", 2, "--max-new-tokens", 8, "--device", "cpu")
    shown = out.count("--- completion")
    assert shown <= 2 and out.count("def read_json(path):") == shown and (shown or "no completion" in out)


def test_resume_continues_a_run_from_its_saved_config(tmp_path: Path, prepared: dict[str, Path]) -> None:
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--block-size", 32, "--batch-size", 2, "--eval-tokens", 128, "--device", "cpu"]
    invoke("train", prepared["data"], "--out", run, "--max-steps", 2, *common)
    invoke("train", prepared["data"], "--out", run, "--max-steps", 4, "--resume", "--device", "cpu")
    from codecomplete.engine.checkpoint import load_checkpoint

    last = load_checkpoint(run / "last")
    assert last.provenance["step"] == 4 and last.model.config.block_size == 32

    # A copied run goes on in the copy; the folder it came from is left as it was.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = (run / "metrics.jsonl").read_bytes()
    invoke("train", prepared["data"], "--out", copy, "--max-steps", 6, "--resume", "--device", "cpu")
    assert load_checkpoint(copy / "last").provenance["step"] == 6 and load_checkpoint(run / "last").provenance["step"] == 4
    assert (run / "metrics.jsonl").read_bytes() == before


def test_quickstart_runs_the_pipeline_and_resumes(tmp_path: Path) -> None:
    code = write_python_tree(tmp_path / "code", n_repos=2, files_per_repo=4, seed=3)
    out = tmp_path / "qs"
    args = ("quickstart", code, "--out", out, "--minutes", 0.05, "--preset", "tiny", "--vocab-size", 400, "--device", "cpu", "--eval-cases", 6)
    first = invoke(*args)
    # Not a terminal: whole progress lines, not bars cut to 80 columns ("0:0… eta 0:00:…").
    assert "…" not in first and not any("━" in line and "eta" in line for line in first.splitlines())
    assert any(line.startswith("quickstart 6/6: report | 6/6 steps") for line in first.splitlines())
    assert any(line.startswith("train loss ") and " | " in line for line in first.splitlines())
    setting = [line for line in first.splitlines() if '"codecomplete.checkpoint"' in line]
    assert setting and str((out / "run" / "best").resolve()) in setting[0]
    evaluation = json.loads((out / "run" / "eval.json").read_text())  # evaluated against the n-gram baseline
    assert set(evaluation["line"]) == {"model", "baseline"} and evaluation["line"]["model"]["cases"] == 6
    assert "| exact match |" in (out / "run" / "report.md").read_text()
    shards = sorted(p.stat().st_mtime_ns for p in (out / "corpus").glob("*.parquet"))
    invoke(*args)  # again: earlier steps are kept, training resumes
    assert sorted(p.stat().st_mtime_ns for p in (out / "corpus").glob("*.parquet")) == shards


@pytest.mark.parametrize(
    "args, expected",
    [
        (("collect", "{tmp}/missing", "--out", "{tmp}/c"), "does not exist"),
        (("collect", "{tmp}/empty", "--out", "{tmp}/c"), "no .py files"),
        (("tokenizer", "{tmp}/nothing", "--out", "{tmp}/t.json"), "does not exist"),
        (("sample", "{tmp}/empty"), "lacks config.json"),
        (("train", "{tmp}/empty", "--max-steps", "1"), "tokenizer file"),
        (("eval", "{tmp}/empty", "--data", "{tmp}/empty"), "lacks config.json"),
        (("eval", "{tmp}/empty", "--corpus", "{tmp}/missing"), "does not exist"),
        (("baseline", "{tmp}/empty"), "tokenizer file"),
        (("report", "{tmp}/empty"), "no metrics.jsonl"),
    ],
)
def test_bad_input_gets_a_one_line_error(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    (tmp_path / "empty").mkdir()
    proc = cli(*(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr


def test_sample_refuses_a_corrupt_checkpoint(tmp_path: Path, prepared: dict[str, Path]) -> None:
    from codecomplete.engine.checkpoint import save_checkpoint
    from codecomplete.engine.model import GPT, config_from_preset
    from codecomplete.engine.tokenizer import Tokenizer

    tok = Tokenizer.from_file(prepared["tokenizer"])
    ckpt = save_checkpoint(tmp_path / "ckpt", GPT(config_from_preset("tiny", tok.vocab_size)), tok)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    proc = cli("sample", ckpt, "--device", "cpu")
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_greedy_sample_is_repeatable_python_text(tmp_path: Path, prepared: dict[str, Path]) -> None:
    from codecomplete.train.cli import run_sample

    run = tmp_path / "run"
    invoke("train", prepared["data"], "--out", run, "--preset", "tiny", "--max-steps", 3, "--block-size", 32, "--batch-size", 2, "--eval-tokens", 128, "--device", "cpu")
    a = run_sample(run / "best", "import os\n", n=2, max_new_tokens=12, temperature=0, device="cpu")
    assert a == run_sample(run / "best", "import os\n", n=2, max_new_tokens=12, temperature=0, device="cpu")
    assert len(a) == len(set(a))  # greedy rows start from different tokens; equal answers merge


def test_quickstart_defaults_to_the_standard_library_and_site_packages() -> None:
    import sysconfig

    from codecomplete.train.cli import default_code_folders

    folders = default_code_folders()
    stdlib, site = Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])
    assert folders[0] == stdlib
    assert any(site == f or f in site.parents for f in folders)  # site-packages walked, once
    assert not any(a != b and a in b.parents for a in folders for b in folders)
