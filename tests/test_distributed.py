"""Two real processes under torchrun on the CPU (gloo backend): the README's command, as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.distributed import Dist, micro_steps
from codecomplete.train.loop import CONFIG_FILE, TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]
STEPS, EVAL_EVERY = 24, 6
# Each step: 4 micro-batches of 2 sequences, i.e. 2 per process with 2 processes.
ARGS = ["--preset", "tiny", "--block-size", "32", "--batch-size", "2", "--grad-accum", "4", "--lr", "3e-3",
        "--warmup-steps", "2", "--max-steps", str(STEPS), "--eval-every", str(EVAL_EVERY), "--eval-tokens", "256",
        "--log-every", "1", "--device", "cpu"]
# fp32 sums over two ranks in another order than one process: the curves agree to rounding.
LOSS_TOLERANCE = 1e-4

# Faults planted in a real run: torchrun starts this script instead of `-m codecomplete.train.cli`.
WRAPPER = """
import sys
from codecomplete.train import distributed
from codecomplete.train.cli import main
from codecomplete.train.loop import Trainer
{plant}
sys.argv[0] = "codecomplete-train"
main()
"""
# Rank 1 alone turns its loss to NaN from step 8 until the learning rate has been lowered.
PLANT_NAN = """
init = Trainer.__init__
def planted(self, *args, **kwargs):
    init(self, *args, **kwargs)
    def poison(module, inputs, output):
        if self.dist.rank == 1 and self.step >= 8 and self.lr_scale == 1.0 and module.training:
            return output * float("nan")
    distributed.unwrap(self.model).transformer.ln_f.register_forward_hook(poison)
Trainer.__init__ = planted
"""
# Both ranks stop making progress after step 9 (three steps past the checkpoint of step 6), so
# the SIGKILL lands mid-run however slowly a loaded machine runs the test.
HANG_AFTER_STEP_9 = """
import os
import threading
from pathlib import Path
train_step = Trainer.train_step
def hang(self):
    if self.step == 9:
        Path(self.cfg.out, f"hanging-{self.dist.rank}").write_text(str(os.getpid()))
        threading.Event().wait()
    return train_step(self)
Trainer.train_step = hang
"""


def plant(tmp_path: Path, code: str) -> Path:
    script = tmp_path / "planted.py"
    script.write_text(WRAPPER.format(plant=code))
    return script


def torchrun(data: Path, out: Path, *extra: str, script: Path | None = None, args: list[str] = ARGS) -> subprocess.Popen[str]:
    """torchrun --nproc_per_node 2 -m codecomplete.train.cli train DATA --out OUT ..., in its own session."""
    entry = [str(script)] if script else ["-m", "codecomplete.train.cli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *entry,
           "train", str(data), "--out", str(out), *args, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stdout + stderr


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 180) -> None:
    """Poll a file condition while the run goes on; fail if the run ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.005)


def records(run: Path, event: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


@pytest.fixture(scope="module")
def ddp_run(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    return out, finish(torchrun(prepared["data"], out))


def test_two_processes_follow_the_single_process_loss_curve(ddp_run: tuple[Path, str], prepared: dict[str, Path], tmp_path: Path) -> None:
    run, _ = ddp_run
    cfg = TrainConfig(data=str(prepared["data"]), out=str(tmp_path / "one"), preset="tiny", block_size=32, batch_size=2, grad_accum=4,
                      lr=3e-3, warmup_steps=2, max_steps=STEPS, eval_every=EVAL_EVERY, eval_tokens=256, log_every=1, device="cpu")
    Trainer(cfg).run()
    one, two = records(tmp_path / "one", "step"), records(run, "step")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    assert two[-1]["loss"] < two[0]["loss"] - 0.5  # it learns
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(one, two)) < LOSS_TOLERANCE
    val_one, val_two = records(tmp_path / "one", "eval"), records(run, "eval")
    assert max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(val_one, val_two)) < LOSS_TOLERANCE
    assert [r["tokens"] for r in one] == [r["tokens"] for r in two]  # the same effective batch


def test_rank_zero_alone_writes_and_prints(ddp_run: tuple[Path, str]) -> None:
    run, output = ddp_run
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best", "last", "prev", "tb", "metrics.jsonl", "train_config.json", "trainer_state.pt", "trainer_state.prev.pt"])
    assert len(list((run / "tb").iterdir())) == 1  # one event file: rank 1 opened no writer
    assert [r["step"] for r in records(run, "eval")] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert output.count("training ") == 1 and "2 processes on cpu" in output
    assert load_checkpoint(run / "last").provenance["step"] == STEPS
    assert load_checkpoint(run / "prev").provenance["step"] == STEPS - EVAL_EVERY


def test_a_sigkilled_run_resumes_to_the_same_weights(ddp_run: tuple[Path, str], prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = torchrun(prepared["data"], out, script=plant(tmp_path, HANG_AFTER_STEP_9))
    markers = [out / "hanging-0", out / "hanging-1"]
    wait_for(lambda: all(m.exists() and m.read_text() for m in markers), proc)
    # torchrun and both ranks at once, as when a node dies (the ranks run in sessions of their own)
    for pid in [proc.pid, *(int(m.read_text()) for m in markers)]:
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert records(out, "step")[-1]["step"] == 9 and load_checkpoint(out / "last").provenance["step"] == EVAL_EVERY

    finish(torchrun(prepared["data"], out, "--resume"))
    a, b = weights(ddp_run[0]), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_on_one_rank_rolls_both_back_under_fsdp(ddp_run: tuple[Path, str], prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "nan"
    output = finish(torchrun(prepared["data"], out, "--fsdp", script=plant(tmp_path, PLANT_NAN)))
    (rollback,) = records(out, "rollback")
    assert rollback["from_step"] == 8 and rollback["step"] == EVAL_EVERY and rollback["lr_scale"] == 0.5
    assert "rolled back from step 8" in output
    steps = records(out, "step")
    assert steps[-1]["step"] == STEPS and all(r["loss"] == r["loss"] for r in steps)  # finished, no NaN logged
    # FSDP follows the DDP run until the planted fault, and after it at half the learning rate
    ddp = {r["step"]: r for r in records(ddp_run[0], "step")}
    assert all(abs(r["loss"] - ddp[r["step"]]["loss"]) < LOSS_TOLERANCE for r in steps[: EVAL_EVERY + 1])
    assert all(r["lr"] == pytest.approx(ddp[r["step"]]["lr"] * 0.5) for r in steps[-3:])


def test_grad_accum_is_shared_out_over_the_processes() -> None:
    assert micro_steps(4, Dist(rank=0, world_size=2)) == range(0, 2)
    assert micro_steps(4, Dist(rank=1, world_size=2)) == range(2, 4)
    with pytest.raises(CodecompleteError, match="--grad-accum 3 .* multiple of 2"):
        micro_steps(3, Dist(rank=0, world_size=2))


# --- --grad-accum left out: one micro-batch per process -------------------------------------------
def short(steps: int) -> list[str]:
    """ARGS without --grad-accum, for `steps` steps with one evaluation at the end."""
    args = list(ARGS)
    at = args.index("--grad-accum")
    del args[at : at + 2]
    return [*args, "--max-steps", str(steps), "--eval-every", str(steps)]  # click: the last value wins


def test_without_grad_accum_each_process_takes_one_micro_batch_and_it_says_so_once(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    output = finish(torchrun(prepared["data"], out, args=short(2)))
    assert json.loads((out / CONFIG_FILE).read_text())["grad_accum"] == 2
    assert output.count("note: --grad-accum not given: 2, one micro-batch per process, so a step takes 2 x --batch-size 2 = 4 sequences") == 1
    assert [r["tokens"] for r in records(out, "step")] == [4 * 32, 2 * 4 * 32]  # 4 sequences of 32 tokens a step


def test_a_run_resumed_on_more_processes_goes_on_with_a_grad_accum_that_splits(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(prepared["data"]), out=str(out), preset="tiny", block_size=32, batch_size=2, grad_accum=1,
                      lr=3e-3, warmup_steps=2, max_steps=2, eval_every=2, eval_tokens=256, log_every=1, device="cpu")
    Trainer(cfg).run()  # one process: one micro-batch of 2 sequences a step
    output = finish(torchrun(prepared["data"], out, "--resume", args=short(4)))
    assert output.count("saved with --grad-accum 1, which does not split over 2 processes: it goes on with 2") == 1
    assert json.loads((out / CONFIG_FILE).read_text())["grad_accum"] == 2
    assert load_checkpoint(out / "last").provenance["tokens_seen"] == (2 * 2 + 2 * 4) * 32  # 2 steps of 2 sequences, 2 of 4


@pytest.mark.parametrize(("processes", "given", "saved", "expected", "note"), [
    (1, None, None, 1, ""),
    (2, None, None, 2, "--grad-accum not given: 2"),
    (2, 3, None, 3, ""),  # explicit: kept, and micro_steps stops with its one-line error
    (2, None, 4, 4, ""),  # a resumed run whose value splits keeps it
    (2, None, 3, 4, "saved with --grad-accum 3, which does not split over 2 processes: it goes on with 4"),
    (4, None, 1, 4, "it goes on with 4, so a step now takes 8 sequences instead of 2"),
    (2, 6, 3, 6, ""),  # explicit on resume: the user's value
])
def test_grad_accum_defaults_to_one_micro_batch_per_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int, given: int | None, saved: int | None, expected: int, note: str) -> None:
    from codecomplete.train import cli

    seen: list[TrainConfig] = []
    monkeypatch.setattr(cli, "run_train", lambda cfg, resume: seen.append(cfg))
    out = tmp_path / "run"
    if saved is not None:
        out.mkdir()
        (out / CONFIG_FILE).write_text(json.dumps(asdict(TrainConfig(data="data", out=str(out), batch_size=2, grad_accum=saved))))
    args = ["train", str(tmp_path / "data"), "--out", str(out), "--batch-size", "2", "--max-steps", "1"]
    args += ["--grad-accum", str(given)] if given is not None else []
    args += ["--resume"] if saved is not None else []
    result = CliRunner().invoke(cli.app, args, env={"WORLD_SIZE": str(processes), "RANK": "0"})
    assert result.exit_code == 0, result.output
    assert seen[0].grad_accum == expected
    assert (note in result.output if note else "note:" not in result.output), result.output
