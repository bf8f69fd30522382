"""The training loop: AdamW, warmup + cosine, accumulation, evaluation, NaN rollback, resume.

One process or many under torchrun (train.distributed): every rank runs this loop on its share
of each step's micro-batches; rank 0 alone logs and writes the run folder (train.run_folder).
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from codecomplete.engine.checkpoint import load_checkpoint
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.hf import MAX_CONTEXT
from codecomplete.engine.model import GPT, MLPS, PRESETS, GPTConfig, config_from_preset
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train import distributed, run_folder
from codecomplete.train.data import FimTokens, TokenShards, batch_rng
from codecomplete.train.muon import Muon
from codecomplete.train.prepare import read_meta

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
ROLLBACK_LR_FACTOR = 0.5


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "small"
    block_size: int | None = None  # None: the preset's
    max_steps: int | None = None
    minutes: float | None = None
    # Defaults suit the small preset on a laptop CPU, where a run sees a few million tokens and
    # more, smaller steps learn faster (measured: 4-minute runs, batch 4 at 2e-3 reached 6.66
    # validation loss against 6.94 for batch 8 at 1e-3); raise the batch on a GPU.
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    fim_rate: float = 0.5
    optimizer: str = "adamw"  # or "muon"
    mlp: str = "gelu"  # or "swiglu": the Llama layout, which `export` writes for transformers
    init_from: str | None = None  # a checkpoint or Hugging Face folder to fine-tune (its shape, no preset)
    # Fine-tuning on one project forgets the rest of Python; rows of other code (replay_data's train
    # split, prepared with the same tokenizer) in every batch keep what the model knew.
    replay_data: str | None = None
    replay: float = 0.0  # share of each micro-batch's rows drawn from replay_data
    provenance: dict[str, Any] = field(default_factory=dict)  # more for config.json's (adapt: base, project)
    eval_every: int = 100
    eval_tokens: int = 65_536
    log_every: int = 10
    max_bad_steps: int = 20  # consecutive non-finite steps before a rollback (a second time: give up)
    seed: int = 1337
    device: str = "auto"
    overfit_batch: bool = False
    fsdp: bool = False  # shard parameters, gradients and optimizer state over torchrun's processes
    compile: bool = False  # torch.compile the training forward/backward


Report = Callable[[dict[str, Any]], None]


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over steps, then cosine to min_lr over the budget's progress (0..1)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    named = list(model.named_parameters())
    no_decay = [p for _, p in named if p.dim() < 2]  # norm gains
    if cfg.optimizer == "muon":
        hidden = [p for name, p in named if p.dim() == 2 and ".h." in name]  # the blocks' matrices
        embedding = [p for name, p in named if p.dim() == 2 and ".h." not in name]
        groups = [{"params": hidden, "weight_decay": cfg.weight_decay, "muon": True},
                  {"params": embedding, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return Muon(groups, lr=cfg.lr)
    decay = [p for _, p in named if p.dim() >= 2]  # matrices and embeddings
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def portable_path(path: str | Path, run: Path) -> str:
    """`path` as a checkpoint records it: relative to the run folder, or its name alone when the
    two share no folder below the root, never this machine's absolute path (checkpoints travel)."""
    target, start = Path(path).resolve(), run.resolve()
    try:
        shared = Path(os.path.commonpath([target, start]))
    except ValueError:  # two Windows drives
        return target.name
    return target.name if shared == Path(target.anchor) else os.path.relpath(target, start)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class StopSignals:
    """SIGINT/SIGTERM ask the loop to write a checkpoint and stop after the current step.

    A second Ctrl-C stops at once, without saving. Handlers can only be set from the main
    thread; elsewhere signals keep their usual meaning.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, report: Report | None = None) -> None:
        if cfg.max_steps is None and cfg.minutes is None:
            raise CodecompleteError("give a budget: --max-steps N and/or --minutes M")
        if cfg.optimizer not in ("adamw", "muon"):
            raise CodecompleteError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or muon")
        if cfg.optimizer == "muon" and cfg.fsdp:
            # Newton-Schulz needs each whole matrix; FSDP gives every process a slice of it
            raise CodecompleteError("--optimizer muon cannot shard its matrices; use --optimizer adamw with --fsdp")
        if cfg.preset not in PRESETS:
            raise CodecompleteError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
        if cfg.mlp not in MLPS:
            raise CodecompleteError(f"unknown --mlp {cfg.mlp!r}; choose gelu or swiglu (the Llama layout `export` writes)")
        self.dist, self.device = distributed.setup(cfg.device)
        self.micro = distributed.micro_steps(cfg.grad_accum, self.dist)
        self.cfg, self.report = cfg, (report or (lambda event: None)) if self.dist.is_main else (lambda event: None)
        self.out, data = Path(cfg.out), Path(cfg.data)
        self.tokenizer = Tokenizer.from_file(data / "tokenizer.json")
        self.train_data, self.val_data = TokenShards(data, "train"), TokenShards(data, "val")
        self.replay_data, self.replay_rows = replay_shards(cfg, data)
        # Repository-level examples teach the snippet layout the engine then uses (engine/prompt.py).
        self.repo_context = bool(read_meta(data).get("repo_context"))
        model_config, start = initial_model(cfg, self.tokenizer, data)
        for shards in (self.train_data, self.val_data, *([self.replay_data] if self.replay_data else [])):
            shards.check_fits(model_config.block_size)
        ids = self.tokenizer.special_ids
        if cfg.fim_rate > 0 and not self.tokenizer.has_fim:
            raise CodecompleteError(f"the tokenizer of {data} has no fill-in-the-middle tokens; pass --fim-rate 0")
        self.fim = None if not self.tokenizer.has_fim else FimTokens(
            ids["fim_prefix"], ids["fim_suffix"], ids["fim_middle"], ids["eot"], self.tokenizer.fim_order, ids.get("file_sep", -1))

        self.step, self.elapsed, self.best_val, self.bad_steps, self.lr_scale = 0, 0.0, math.inf, 0, 1.0
        # Counted, not step x tokens_per_step: a resumed run may go on with another --grad-accum.
        self.tokens_seen = 0
        if not resume and any((self.out / slot).exists() for slot, _ in run_folder.SLOTS):
            raise CodecompleteError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        torch.manual_seed(cfg.seed)
        self.config = model_config
        model = GPT(model_config)
        if start is not None:
            model.load_state_dict(start)
        self.model = distributed.wrap(model, self.device, cfg.fsdp)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        # Only the training step is compiled: evaluation's shapes differ and would recompile.
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        self.eval_spans = self.val_data.eval_windows(model_config.block_size, cfg.eval_tokens)
        self.signals, self.stop_agreed = StopSignals(), False
        self.tb = None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.out / CONFIG_FILE, asdict(cfg))
            self.tb = _tensorboard(self.out / "tb")
        if resume:
            self._restore()
        # Wall time, evaluation included, is what --minutes promises; a resumed run continues it.
        self._clock = time.perf_counter() - self.elapsed

    # -- the run folder ------------------------------------------------------------------
    def _restore(self) -> bool:
        """Load the newest intact slot (last/, else prev/ with a warning); False when there is none yet."""
        if not any((self.out / name).exists() for slot in run_folder.SLOTS for name in slot):
            return False
        problems = []
        for slot, state_file in run_folder.SLOTS:
            try:
                weights, state = run_folder.read_slot(self.out, slot, state_file, self.config)
            except CodecompleteError as e:
                problems.append(f"{self.out / slot}: {e}")
                continue
            distributed.load_state(self.model, self.optimizer, weights, state["optimizer"])
            self.step, self.elapsed, self.best_val = int(state["step"]), float(state["elapsed"]), float(state["best_val"])
            self.lr_scale = float(state.get("lr_scale", 1.0))
            self.tokens_seen = int(state.get("tokens_seen", self.step * self.tokens_per_step))  # older states lack it
            torch.set_rng_state(state["torch_rng"])
            if problems:
                self._log({"event": "warning", "step": self.step, "message": f"{problems[0]}; resumed from {self.out / slot} (step {self.step}) instead"})
                if self.dist.is_main:
                    run_folder.set_aside(self.out, run_folder.SLOTS[0])
            return True
        raise CodecompleteError(f"no intact checkpoint to resume from ({'; '.join(problems)}); start a new run with another --out")

    def _provenance(self, metrics: dict[str, float]) -> dict[str, Any]:
        c = self.cfg
        return {"step": self.step, "tokens_seen": self.tokens_seen, **metrics, "data": portable_path(c.data, self.out),
                "fim_rate": c.fim_rate, **({"init_from": c.init_from} if c.init_from else {"preset": c.preset}),
                **({"repo_context": True} if self.repo_context else {}), **c.provenance}

    def _save(self, metrics: dict[str, float], best: bool) -> None:
        """Every rank calls this (FSDP gathers the weights); rank 0 writes, and all learn whether it could."""
        model = distributed.model_for_saving(self.model, self.dist)
        optimizer = distributed.optimizer_state(self.model, self.optimizer)
        failure = None
        if self.dist.is_main:
            state = {"step": self.step, "elapsed": self.elapsed, "best_val": self.best_val, "lr_scale": self.lr_scale,
                     "tokens_seen": self.tokens_seen, "optimizer": optimizer, "torch_rng": torch.get_rng_state()}
            try:
                run_folder.write_slot(self.out, model, self.tokenizer, state, self._provenance(metrics), best)
            except (OSError, SafetensorError) as e:
                failure = run_folder.write_failure(e, self.out)
        failure = distributed.broadcast_from_main(failure)
        if failure:
            raise CodecompleteError(failure)

    # -- loop ----------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.config.block_size

    def progress(self) -> float:
        done = [self.step / self.cfg.max_steps] if self.cfg.max_steps else []
        if self.cfg.minutes:
            done.append(self.elapsed / (self.cfg.minutes * 60))
        return max(done)

    def _batch(self, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = 0 if self.cfg.overfit_batch else self.step
        fim_rate = 0.0 if self.cfg.overfit_batch else self.cfg.fim_rate
        rng, rows = batch_rng(self.cfg.seed, step, micro), self.cfg.batch_size - self.replay_rows
        x, y = self.train_data.random_batch(rng, rows, self.config.block_size, fim_rate, self.fim)
        if self.replay_data is not None and self.replay_rows:
            rx, ry = self.replay_data.random_batch(rng, self.replay_rows, self.config.block_size, fim_rate, self.fim)
            x, y = torch.cat([x, rx]), torch.cat([y, ry])
        return x.to(self.device), y.to(self.device)

    def train_step(self) -> float | None:
        """One optimizer step; None when the loss or gradients were not finite (step skipped).

        Also agrees with the other ranks on the elapsed time (the schedule and the budget must
        be the same everywhere) and on whether a stop signal arrived (self.stop_agreed).
        """
        lr = lr_at(self.cfg, self.step, self.progress()) * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in self.micro:
            x, y = self._batch(micro)
            with distributed.gradient_sync(self.model, last=micro == self.micro[-1]):
                with self.autocast:
                    _, loss = self.forward(x, y)
                (loss / len(self.micro)).backward()
            total += loss.detach() / len(self.micro)
        norm = distributed.local_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)).item()
        mean, self.stop_agreed, self.elapsed = distributed.agree(total, self.signals.received is not None, time.perf_counter() - self._clock)
        if not (math.isfinite(mean) and math.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._last_lr, self._last_norm = lr, norm
        return mean

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Every rank evaluates the same windows: FSDP needs all of them in each forward."""
        model = distributed.unwrap(self.model)
        model.eval()
        T, losses = self.config.block_size, []
        for i in range(0, len(self.eval_spans), self.cfg.batch_size):
            rows = torch.stack([torch.from_numpy(self.val_data.window(s, o, T + 1)) for s, o in self.eval_spans[i : i + self.cfg.batch_size]])
            with self.autocast:
                _, loss = model(rows[:, :-1].to(self.device), rows[:, 1:].to(self.device))
            losses.append((loss.item(), rows.size(0)))
        model.train()
        val_loss = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
        bits_per_byte = val_loss / math.log(2) * self.val_data.tokens / max(self.val_data.bytes, 1)
        return {"val_loss": val_loss, "val_bpb": bits_per_byte}

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if self.tb is not None and isinstance(v, float) and k not in ("elapsed",):
                self.tb.add_scalar(k, v, record["step"])
        self.report(record)

    def _budget_left(self) -> bool:
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return False
        return not (self.cfg.minutes is not None and self.elapsed >= self.cfg.minutes * 60)

    def run(self) -> dict[str, Any]:
        self.model.train()
        self.report({"event": "start", "step": self.step, "params": distributed.unwrap(self.model).num_params(), "device": str(self.device),
                     "processes": self.dist.world_size, "train_tokens": self.train_data.tokens, "val_tokens": self.val_data.tokens,
                     "max_steps": self.cfg.max_steps, "minutes": self.cfg.minutes})
        window_t, window_tokens = time.perf_counter(), 0
        with self.signals:
            while self._budget_left():
                loss = self.train_step()
                if loss is None:
                    self.bad_steps += 1
                    self.report({"event": "bad_step", "step": self.step, "consecutive": self.bad_steps})
                    if self.bad_steps >= self.cfg.max_bad_steps:
                        self._roll_back()
                else:
                    self.bad_steps = 0
                    self.step += 1
                    self.tokens_seen += self.tokens_per_step
                    window_tokens += self.tokens_per_step
                    if self.step % self.cfg.log_every == 0 or self.step == 1:
                        now = time.perf_counter()
                        self._log({"event": "step", "step": self.step, "loss": loss, "lr": self._last_lr, "grad_norm": self._last_norm,
                                   "tokens": self.tokens_seen, "tok_per_s": window_tokens / (now - window_t), "elapsed": self.elapsed})
                        window_t, window_tokens = now, 0
                    if self.step % self.cfg.eval_every == 0 and self._budget_left():
                        self._eval_and_save()
                        window_t, window_tokens = time.perf_counter(), 0
                if self.stop_agreed:
                    return self._stop_and_save()
            return self._eval_and_save()

    def _roll_back(self) -> None:
        """Too many non-finite steps in a row: back to the last good checkpoint at a lower learning rate, once."""
        what = f"{self.bad_steps} steps in a row had a NaN/Inf loss or gradient at step {self.step}"
        if self.lr_scale < 1:
            raise CodecompleteError(f"{what}, again after rolling back and lowering the learning rate to {self.cfg.lr * self.lr_scale:g}; "
                                    f"check the data or start again with a lower --lr (now {self.cfg.lr})")
        elapsed, at = self.elapsed, self.step
        if not self._restore():
            raise CodecompleteError(f"{what}, before the first checkpoint; start again with a lower --lr (now {self.cfg.lr})")
        self.elapsed, self.bad_steps = elapsed, 0  # the time spent still counts against --minutes
        self.lr_scale *= ROLLBACK_LR_FACTOR
        self._log({"event": "rollback", "step": self.step, "from_step": at, "lr_scale": self.lr_scale})

    def _stop_and_save(self) -> dict[str, Any]:
        self._save({}, best=False)
        record = {"event": "stopped", "step": self.step, "tokens": self.tokens_seen, "elapsed": self.elapsed,
                  "signal": self.signals.received or "a signal to another process"}
        self._log(record)
        return record

    def _eval_and_save(self) -> dict[str, Any]:
        metrics = self.evaluate()
        record = {"event": "eval", "step": self.step, "tokens": self.tokens_seen, "elapsed": self.elapsed, **metrics}
        improved = metrics["val_loss"] < self.best_val
        if improved:
            self.best_val = metrics["val_loss"]
        self._save(metrics, best=improved)
        self._log({**record, "best": improved})
        if self.tb is not None:
            self.tb.flush()
        return record


def initial_model(cfg: TrainConfig, tokenizer: Tokenizer, data: Path) -> tuple[GPTConfig, dict[str, Any] | None]:
    """The model's config and the weights to start from: a preset's shape and none, or --init-from's."""
    if not cfg.init_from:
        overrides = {"block_size": cfg.block_size} if cfg.block_size else {}
        return config_from_preset(cfg.preset, tokenizer.vocab_size, cfg.mlp, **overrides), None
    start = load_checkpoint(cfg.init_from, max_context=cfg.block_size or MAX_CONTEXT)
    if start.tokenizer.sha256 != tokenizer.sha256:
        raise CodecompleteError(f"{data} was prepared with another tokenizer than {cfg.init_from}'s; prepare the corpus "
                                f"with `codecomplete-train prepare CORPUS --tokenizer {Path(cfg.init_from) / 'tokenizer.json'}`")
    config = replace(start.model.config, block_size=cfg.block_size or start.model.config.block_size)
    return config, start.model.state_dict()


def replay_shards(cfg: TrainConfig, data: Path) -> tuple[TokenShards | None, int]:
    """The replay split and how many rows of each micro-batch it gives (at least one left to data)."""
    if not 0 <= cfg.replay < 1:
        raise CodecompleteError(f"replay is a share of each batch, from 0 to below 1, not {cfg.replay}")
    if not cfg.replay or not cfg.replay_data:
        return None, 0
    replay = Path(cfg.replay_data)
    if read_meta(replay)["tokenizer_sha256"] != read_meta(data)["tokenizer_sha256"]:
        raise CodecompleteError(f"{replay} was prepared with another tokenizer than {data}; prepare both with the same one")
    return TokenShards(replay, "train"), min(cfg.batch_size - 1, max(1, round(cfg.replay * cfg.batch_size)))


def _tensorboard(logdir: Path):  # -> SummaryWriter | None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a trimmed install still trains
        return None
    return SummaryWriter(str(logdir))


def load_train_config(out: Path, **overrides: Any) -> TrainConfig:
    """The config a run was started with, for --resume; budget flags may be overridden.

    The run goes on in `out` itself, wherever it was started: a copied or moved run folder must
    not write into the folder it came from.
    """
    path = out / CONFIG_FILE
    if not path.is_file():
        raise CodecompleteError(f"{out} holds no {CONFIG_FILE}; nothing to resume there")
    saved = json.loads(path.read_text())
    known = {f.name for f in fields(TrainConfig)}
    merged = {k: v for k, v in saved.items() if k in known} | {k: v for k, v in overrides.items() if v is not None} | {"out": str(out)}
    return TrainConfig(**merged)
