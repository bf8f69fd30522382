from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.engine.errors import CodecompleteError
from codecomplete.train import run_folder
from codecomplete.train.eval_cli import _data_of
from codecomplete.train.loop import TrainConfig, Trainer, lr_at, portable_path


def tiny_config(prepared: dict[str, Path], out: Path, **kw) -> TrainConfig:
    base = dict(data=str(prepared["data"]), out=str(out), preset="tiny", block_size=32, batch_size=4, grad_accum=2,
                lr=3e-3, warmup_steps=2, eval_every=3, eval_tokens=256, log_every=1, device="cpu", max_steps=6)
    return TrainConfig(**{**base, **kw})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def test_run_writes_checkpoints_metrics_and_lowers_the_loss(prepared: dict[str, Path], tmp_path: Path) -> None:
    final = Trainer(tiny_config(prepared, tmp_path / "run", max_steps=30, eval_every=10)).run()
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30] and final["step"] == 30
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < math.log(512)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert all(math.isfinite(e["val_bpb"]) and e["val_bpb"] > 0 for e in evals)
    best = load_checkpoint(run / "best")
    assert best.provenance["val_loss"] == min(e["val_loss"] for e in evals)
    assert load_checkpoint(run / "last").provenance["step"] == 30
    assert (run / "trainer_state.pt").is_file() and list((run / "tb").iterdir())


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_killed_and_resumed_run_matches_an_uninterrupted_one(prepared: dict[str, Path], tmp_path: Path, optimizer: str) -> None:
    Trainer(tiny_config(prepared, tmp_path / "straight", optimizer=optimizer)).run()

    def die_after_first_checkpoint(event: dict) -> None:
        if event["event"] == "eval":
            raise KeyboardInterrupt  # as if killed right after step 3 was written

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(prepared, tmp_path / "resumed", optimizer=optimizer), report=die_after_first_checkpoint).run()
    assert load_checkpoint(tmp_path / "resumed" / "last").provenance["step"] == 3
    Trainer(tiny_config(prepared, tmp_path / "resumed", optimizer=optimizer), resume=True).run()

    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_name_their_data_from_the_run_folder_never_by_an_absolute_path(
        prepared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "x"
    Trainer(tiny_config(prepared, run, max_steps=1)).run()
    for slot in ("best", "last"):
        recorded = load_checkpoint(run / slot).provenance["data"]
        assert not Path(recorded).is_absolute() and (run / recorded).resolve() == prepared["data"].resolve()
    monkeypatch.chdir(tmp_path)  # `eval` finds the data from the run folder, wherever it runs
    assert _data_of(run / "best").resolve() == prepared["data"].resolve()
    assert portable_path("/srv/corpus/data", Path("/home/me/runs/x")) == "data"  # nothing shared but the root


def test_a_run_resumed_with_another_grad_accum_counts_the_tokens_it_saw(prepared: dict[str, Path], tmp_path: Path) -> None:
    Trainer(tiny_config(prepared, tmp_path / "run", max_steps=2, grad_accum=1)).run()
    Trainer(tiny_config(prepared, tmp_path / "run", max_steps=4, grad_accum=2), resume=True).run()
    sequences = 2 * 4 * 1 + 2 * 4 * 2  # two steps of one micro-batch of 4, two of two
    assert load_checkpoint(tmp_path / "run" / "last").provenance["tokens_seen"] == sequences * 32


def test_an_existing_run_is_not_overwritten_without_resume(prepared: dict[str, Path], tmp_path: Path) -> None:
    Trainer(tiny_config(prepared, tmp_path / "run", max_steps=1)).run()
    with pytest.raises(CodecompleteError, match="--resume"):
        Trainer(tiny_config(prepared, tmp_path / "run", max_steps=1))


def test_a_non_finite_gradient_skips_the_step(prepared: dict[str, Path], tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", max_steps=3, eval_every=100))
    events: list[dict] = []
    trainer.report = events.append
    poisoned = {"left": 1}

    def nan_once(grad: torch.Tensor) -> torch.Tensor:
        if poisoned["left"]:
            poisoned["left"] -= 1
            return torch.full_like(grad, float("nan"))
        return grad

    trainer.model.transformer.ln_f.weight.register_hook(nan_once)
    before = trainer.model.transformer.ln_f.weight.detach().clone()
    assert trainer.train_step() is None
    assert torch.equal(trainer.model.transformer.ln_f.weight, before)  # the bad step changed nothing
    trainer.run()
    assert [e["step"] for e in events if e["event"] == "bad_step"] == []  # hook spent: no more bad steps
    assert trainer.step == 3


def test_repeated_nan_steps_before_a_checkpoint_stop_with_a_clear_message(prepared: dict[str, Path], tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", max_bad_steps=3))
    with torch.no_grad():
        trainer.model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(CodecompleteError, match=r"3 steps in a row .*NaN.*--lr"):
        trainer.run()
    assert trainer.step == 0


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_overfit_batch_drives_the_loss_down(prepared: dict[str, Path], tmp_path: Path, optimizer: str) -> None:
    cfg = tiny_config(prepared, tmp_path / "run", overfit_batch=True, max_steps=60, eval_every=1000, lr=1e-2, warmup_steps=5, batch_size=2,
                      grad_accum=1, optimizer=optimizer)
    losses: list[float] = []
    Trainer(cfg, report=lambda e: losses.append(e["loss"]) if e["event"] == "step" else None).run()
    assert losses[-1] < 0.25 * losses[0]


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(data="", out="", lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.1) == lr_at(cfg, 99, 3.0)


def test_an_unknown_optimizer_is_one_clear_line(prepared: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="unknown optimizer 'sgd'; choose adamw or muon"):
        Trainer(tiny_config(prepared, tmp_path / "run", optimizer="sgd"))
    assert not (tmp_path / "run").exists()


def test_muon_with_fsdp_is_refused_before_anything_is_written(prepared: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="--optimizer adamw with --fsdp"):
        Trainer(tiny_config(prepared, tmp_path / "run", optimizer="muon", fsdp=True))
    assert not (tmp_path / "run").exists()


def test_a_budget_is_required(prepared: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="budget"):
        Trainer(tiny_config(prepared, tmp_path / "run", max_steps=None))


# -- faults --------------------------------------------------------------------------------
def train_cli(*args: str | Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "codecomplete.train.cli", "train", *map(str, args)]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(prepared: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train_cli(prepared["data"], "--out", run, "--preset", "tiny", "--block-size", 32, "--batch-size", 2,
                     "--max-steps", 100_000, "--eval-every", 3, "--eval-tokens", 128, "--log-every", 1, "--device", "cpu")
    deadline = time.monotonic() + 120
    while not (run / "trainer_state.pt").exists():  # wait for a first checkpoint: the run is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (stopped,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"stopped"' in line]
    assert stopped["signal"] == "SIGTERM" and f"stopped by SIGTERM at step {stopped['step']}" in " ".join(stderr.split())
    assert load_checkpoint(run / "last").provenance["step"] == stopped["step"]
    assert torch.load(run / "trainer_state.pt", weights_only=True)["step"] == stopped["step"]


def break_weights(run: Path) -> None:
    path = run / "last" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # half-written


def break_state(run: Path) -> None:
    (run / "trainer_state.pt").unlink()  # killed between the renames of a save


@pytest.mark.parametrize("damage", [break_weights, break_state])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(prepared: dict[str, Path], tmp_path: Path, damage) -> None:
    Trainer(tiny_config(prepared, tmp_path / "run")).run()  # last/: step 6, prev/: step 3
    finished = {k: v.clone() for k, v in weights(tmp_path / "run").items()}  # not views of the file damaged next
    damage(tmp_path / "run")
    events: list[dict] = []
    trainer = Trainer(tiny_config(prepared, tmp_path / "run"), resume=True, report=events.append)
    (warning,) = [e for e in events if e["event"] == "warning"]
    assert trainer.step == 3 and "run/last" in warning["message"] and "resumed from" in warning["message"]
    assert (tmp_path / "run" / "last.bad").exists()  # set aside, never rotated over the good prev/
    trainer.run()  # steps 4 to 6 again, on the same data
    again = weights(tmp_path / "run")
    assert all(torch.equal(finished[k], again[k]) for k in finished)


def test_a_full_disk_is_one_clear_line_and_loses_nothing(prepared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = run_folder.save_checkpoint

    def full_after_step_3(path, model, tokenizer, provenance):
        if provenance["step"] > 3:
            (Path(path).parent / "partial").write_bytes(b"x")  # what a full disk leaves behind, in spirit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, model, tokenizer, provenance)

    monkeypatch.setattr(run_folder, "save_checkpoint", full_after_step_3)
    with pytest.raises(CodecompleteError, match="disk is full") as err:
        Trainer(tiny_config(prepared, tmp_path / "run")).run()
    assert "\n" not in str(err.value) and "--resume" in str(err.value)
    run = tmp_path / "run"
    assert load_checkpoint(run / "last").provenance["step"] == 3  # the checkpoint before is whole
    assert torch.load(run / "trainer_state.pt", weights_only=True)["step"] == 3
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # nothing half-staged left


def poison_from(trainer: Trainer, step: int, until_rollback: bool) -> None:
    """A gradient hook that plants NaN from a step on (until the learning rate was lowered)."""
    def nan_grad(grad: torch.Tensor) -> torch.Tensor:
        if trainer.step >= step and not (until_rollback and trainer.lr_scale < 1):
            return torch.full_like(grad, float("nan"))
        return grad

    trainer.model.transformer.ln_f.weight.register_hook(nan_grad)


def test_repeated_nan_steps_roll_back_and_lower_the_learning_rate(prepared: dict[str, Path], tmp_path: Path) -> None:
    events: list[dict] = []
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", max_bad_steps=3), report=events.append)
    poison_from(trainer, 4, until_rollback=True)
    trainer.run()
    (rollback,) = [e for e in events if e["event"] == "rollback"]
    assert rollback == {"event": "rollback", "step": 3, "from_step": 4, "lr_scale": 0.5}
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 4, 5, 6]  # step 4 done again after the rollback
    assert all(e["lr"] == pytest.approx(0.5 * lr_at(trainer.cfg, e["step"] - 1, (e["step"] - 1) / 6)) for e in steps[4:])
    assert torch.load(tmp_path / "run" / "trainer_state.pt", weights_only=True)["lr_scale"] == 0.5  # a resume keeps it


def test_nan_steps_after_the_rollback_give_up_with_a_clear_message(prepared: dict[str, Path], tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", max_bad_steps=3))
    poison_from(trainer, 4, until_rollback=False)
    with pytest.raises(CodecompleteError, match=r"3 steps in a row .*NaN.* again after rolling back .*--lr"):
        trainer.run()
    assert load_checkpoint(tmp_path / "run" / "last").provenance["step"] == 3


def test_a_model_trained_on_repository_level_examples_says_so(prepared: dict[str, Path], tmp_path: Path) -> None:
    from codecomplete.train.prepare import PrepareConfig, prepare

    data = tmp_path / "data"
    cfg = PrepareConfig(val_fraction=0.2, repo_context=1.0, repo_chunk_tokens=24, repo_snippet_tokens=8)
    assert prepare(prepared["corpus"], prepared["tokenizer"], data, cfg)["repo_context"]["examples"] > 0
    Trainer(tiny_config(prepared, tmp_path / "run", data=str(data), max_steps=3)).run()
    assert load_checkpoint(tmp_path / "run" / "last").provenance["repo_context"] is True
    Trainer(tiny_config(prepared, tmp_path / "plain", max_steps=3)).run()
    assert "repo_context" not in load_checkpoint(tmp_path / "plain" / "last").provenance


def shard_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.glob("train_*.bin")))


def test_replay_rows_come_from_the_other_data_and_the_rest_from_the_run_s(prepared: dict[str, Path], tmp_path: Path) -> None:
    from codecomplete.train.cli import run_collect, run_prepare

    other = tmp_path / "other"
    for i in range(4):  # code unlike the run's, so that a window tells which data it came from
        (other / f"m{i}.py").parent.mkdir(exist_ok=True)
        (other / f"m{i}.py").write_text("".join(f"zeta_{i}_{j} = [{j}] * {i + j}\n" for j in range(200)))
    run_collect([other], tmp_path / "corpus")
    run_prepare(tmp_path / "corpus", prepared["tokenizer"], tmp_path / "replay", val_fraction=0.25)
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", fim_rate=0.0, replay_data=str(tmp_path / "replay"), replay=0.5))
    x, _ = trainer._batch(0)
    own, replayed = shard_bytes(prepared["data"]), shard_bytes(tmp_path / "replay")
    rows = [x[i].numpy().astype(trainer.train_data.arrays[0].dtype).tobytes() for i in range(len(x))]
    assert len(rows) == 4 and trainer.replay_rows == 2
    assert all(r in own and r not in replayed for r in rows[:2]) and all(r in replayed and r not in own for r in rows[2:])


def test_replay_data_with_another_tokenizer_is_refused(prepared: dict[str, Path], tmp_path: Path) -> None:
    from codecomplete.train.cli import run_prepare, run_tokenizer

    run_tokenizer(prepared["corpus"], tmp_path / "tok.json", vocab_size=300)
    run_prepare(prepared["corpus"], tmp_path / "tok.json", tmp_path / "replay", val_fraction=0.2)
    with pytest.raises(CodecompleteError, match="another tokenizer"):
        Trainer(tiny_config(prepared, tmp_path / "run", replay_data=str(tmp_path / "replay"), replay=0.5))
