from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoint import load_checkpoint
from engine.errors import CodecompleteError
from train.loop import TrainConfig, Trainer, lr_at


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


def test_killed_and_resumed_run_matches_an_uninterrupted_one(prepared: dict[str, Path], tmp_path: Path) -> None:
    Trainer(tiny_config(prepared, tmp_path / "straight")).run()

    def die_after_first_checkpoint(event: dict) -> None:
        if event["event"] == "eval":
            raise KeyboardInterrupt  # as if killed right after step 3 was written

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(prepared, tmp_path / "resumed"), report=die_after_first_checkpoint).run()
    assert load_checkpoint(tmp_path / "resumed" / "last").provenance["step"] == 3
    Trainer(tiny_config(prepared, tmp_path / "resumed"), resume=True).run()

    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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


def test_repeated_nan_steps_stop_with_a_clear_message(prepared: dict[str, Path], tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(prepared, tmp_path / "run", max_bad_steps=3))
    with torch.no_grad():
        trainer.model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(CodecompleteError, match=r"3 steps in a row .*NaN.*--lr"):
        trainer.run()
    assert trainer.step == 0


def test_overfit_batch_drives_the_loss_down(prepared: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(prepared, tmp_path / "run", overfit_batch=True, max_steps=60, eval_every=1000, lr=1e-2, warmup_steps=5, batch_size=2, grad_accum=1)
    losses: list[float] = []
    Trainer(cfg, report=lambda e: losses.append(e["loss"]) if e["event"] == "step" else None).run()
    assert losses[-1] < 0.25 * losses[0]


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(data="", out="", lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.1) == lr_at(cfg, 99, 3.0)


def test_a_budget_is_required(prepared: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="budget"):
        Trainer(tiny_config(prepared, tmp_path / "run", max_steps=None))
