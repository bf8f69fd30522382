"""`codecomplete-train adapt`: a model that has learned your project.

    FOLDER...  -> OUT/corpus   collect's filters, minus what a project walk skips (engine/ignores.py)
               -> held out     whole files: the newest by git history, else chosen by hash
               -> OUT/data     prepared with the base's tokenizer; the held-out files are its validation split
    stdlib     -> OUT/replay   4 MB of this Python's standard library (never the general set's files),
                               half of each batch, so that the model keeps what it knew of other code
               -> OUT/best     the training loop from the base's weights, with FIM, stopped early once the
                               held-out loss stops falling; the same run folder as `train` writes
               -> comparison   base and adapted side by side on the held-out files and on a general set
                               (train/adapt_eval.py)

OUT/adapt.json records the run's config and how far it got, so the same command run again
resumes it, as `train --resume` does.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.progress import console

STATE_FILE = "adapt.json"
FORMAT_VERSION = 1
# (micro-batch, peak learning rate) by device, when not given: far below pretraining's 2e-3. Measured
# on the shipped model, click 8.1.8's source, 100 steps of 4 x 512 tokens on a CPU, held-out and
# general bits per byte from 0.839 and 1.067: 1e-3 -> 0.989 and 1.295 (worse on both), 3e-4 -> 0.810
# and 1.175, 1e-4 -> 0.792 and 1.094. GPUs: not measured; a larger batch, the rate raised with its root.
BATCH_LR = {"cpu": (4, 1e-4), "mps": (16, 2e-4), "cuda": (32, 3e-4)}
RESUMABLE = ("minutes", "max_steps", "device", "eval_cases")  # what a resumed run may change
REPLAY_BYTES = 4 << 20  # about a million tokens: more than 10 CPU minutes replay
# A project's own big files are what it is about (click's core.py is 110 kB): up to 1 MB, as the
# language server's workspace index takes them, not collect's 100 kB for scraped corpora.
MAX_FILE_BYTES = 1 << 20
Event = Callable[[dict[str, Any]], None]


@dataclass
class AdaptConfig:
    folders: list[str]  # absolute, so that a resumed run finds them from anywhere
    out: str
    base: str  # the checkpoint (or Hugging Face folder) to start from, absolute
    minutes: float = 10.0  # the fine-tuning budget; collecting and the comparison come on top
    max_steps: int | None = None
    heldout: float = 0.1  # share of the project's bytes held out, in whole files
    batch_size: int | None = None  # None: BATCH_LR's for the device
    lr: float | None = None
    warmup_steps: int = 20
    patience: int = 3  # evaluations in a row without a held-out loss lower by min_delta: stop
    min_delta: float = 1e-3  # nats per token
    eval_every: int = 50  # steps between held-out evaluations (and checkpoints)
    eval_tokens: int = 16_384  # held-out tokens per evaluation
    eval_cases: int = 100  # line-completion cases per set in the comparison (0: bits per byte alone)
    general: str | None = None  # the general set: a corpus or a folder of code; None: the standard library
    # Share of each batch from the standard library (never the general set's files): what the
    # project does not teach, the model should not forget.
    replay: float = 0.5
    # Share of the fine-tuned weights in the checkpoint written, the rest the base's (weight-space
    # ensembling, WiSE-FT): below 1 it forgets less of other code and learns less of the project.
    # 0.85 was the best of 0.5/0.7/0.85/1 on three tuning packages (not the benchmark's five).
    blend: float = 0.85
    keep_tests: bool = False
    device: str = "auto"
    seed: int = 1337


@dataclass
class Base:
    """What the run needs to know of its base checkpoint, read once before anything is written."""

    block_size: int
    tokenizer_sha256: str
    has_fim: bool
    completion: dict[str, float]
    provenance: dict[str, Any]


class StoppedEarly(Exception):
    """Raised through the training loop once the held-out loss stopped falling; the loop has
    already written that evaluation's checkpoints and metrics."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(f"stopped early at step {record['step']}")
        self.record = record


@dataclass
class EarlyStop:
    """Told every event of the training loop; after `patience` evaluations in a row that did not
    lower the best held-out loss by `min_delta`, it stops the run (StoppedEarly)."""

    patience: int
    min_delta: float
    best: float = math.inf
    since_best: int = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] != "eval":
            return
        if event["val_loss"] < self.best - self.min_delta:
            self.best, self.since_best = event["val_loss"], 0
        else:
            self.since_best += 1
        if self.since_best >= self.patience:
            raise StoppedEarly(event)

    def replay(self, metrics: Path) -> EarlyStop:
        """The evaluations a resumed run already made count: patience is not reset by a restart."""
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("event") == "eval":
                    self.best, self.since_best = (record["val_loss"], 0) if record["val_loss"] < self.best - self.min_delta \
                        else (self.best, self.since_best + 1)
        return self


# -- planning: everything checked before anything is written ----------------------------------
def read_state(out: Path) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        AdaptConfig(**state["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CodecompleteError(f"{path} is damaged ({e}); pass --overwrite to start over in {out}") from e
    return state


def write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, out / STATE_FILE)


def plan(folders: list[Path], out: Path, base: Path | None, overwrite: bool = False, **options: Any) -> tuple[AdaptConfig, Base]:
    """The run to do: a new one from the options (None: the default), or the one in `out` resumed
    (options that are None keep its saved values; only RESUMABLE ones may change)."""
    state = read_state(out)
    given = {k: v for k, v in options.items() if v is not None}
    if state is not None and not overwrite:
        cfg = AdaptConfig(**{"blend": 1.0, **state["config"]})  # runs from before --blend were written unblended
        cfg.out = str(out)  # where it is now: the folder may have been moved since
        if sorted(str(f.resolve()) for f in folders) != sorted(cfg.folders):
            raise CodecompleteError(f"{out} holds the adaptation to {', '.join(cfg.folders)}; run it with those folders to resume it, "
                                    f"or choose another --out (or pass --overwrite to start over)")
        cfg.base = str(base.resolve()) if base is not None else cfg.base
        for key in RESUMABLE:
            setattr(cfg, key, given.get(key, getattr(cfg, key)))
    else:
        if out.exists() and not out.is_dir():
            raise CodecompleteError(f"{out} is a file; choose a folder for --out")
        if state is None and out.is_dir() and any(out.iterdir()):
            raise CodecompleteError(f"{out} is not empty and holds no adaptation; choose another --out")
        if state is not None and base is None:  # starting over keeps the base it was adapted from
            base = Path(state["config"]["base"])
        from codecomplete.models import DEFAULT_CHECKPOINT

        cfg = AdaptConfig(folders=[str(f.resolve()) for f in folders], out=str(out), base=str((base or DEFAULT_CHECKPOINT).resolve()),
                          **given)
    info = check(cfg)
    if state is not None and not overwrite and info.tokenizer_sha256 != state["tokenizer_sha256"]:
        raise CodecompleteError(f"{cfg.base} has another tokenizer than the one {out} was prepared with; resume without --from "
                                f"(or with the base it started from), or pass --overwrite to adapt {cfg.base} from scratch")
    return cfg, info


def check(cfg: AdaptConfig) -> Base:
    """One-line errors for everything that can be known before anything is written."""
    from codecomplete.engine.checkpoint import load_checkpoint
    from codecomplete.engine.device import pick_device
    from codecomplete.train.collect import iter_python_files

    numbers = [("--minutes", cfg.minutes, cfg.minutes > 0, "the fine-tuning budget in minutes, e.g. 10"),
               ("--max-steps", cfg.max_steps, cfg.max_steps is None or cfg.max_steps >= 1, "a number of steps, 1 or more"),
               ("--heldout", cfg.heldout, 0 < cfg.heldout <= 0.5, "a share of the project's code, above 0 and at most 0.5"),
               ("--batch-size", cfg.batch_size, cfg.batch_size is None or cfg.batch_size >= 1, "1 or more sequences"),
               ("--lr", cfg.lr, cfg.lr is None or cfg.lr > 0, "a learning rate above 0, e.g. 1e-4"),
               ("--patience", cfg.patience, cfg.patience >= 1, "1 or more evaluations"),
               ("--eval-every", cfg.eval_every, cfg.eval_every >= 1, "1 or more steps"),
               ("--eval-cases", cfg.eval_cases, cfg.eval_cases >= 0, "0 or more cases"),
               ("--replay", cfg.replay, 0 <= cfg.replay <= 0.75, "a share of each batch from 0 (none) to 0.75, e.g. 0.5"),
               ("--blend", cfg.blend, 0 < cfg.blend <= 1, "a share of the fine-tuned weights above 0 and at most 1, e.g. 0.5")]
    for flag, value, ok, want in numbers:
        if not ok:
            raise CodecompleteError(f"{flag} {value} is out of range: give {want}")
    for folder in map(Path, cfg.folders):
        if not folder.is_dir():
            raise CodecompleteError(f"{folder} is not a folder; pass the folder of the project to adapt to")
        if next(iter_python_files(folder, project=True), None) is None:
            raise CodecompleteError(f"no .py files under {folder} (virtual environments, site-packages, build output and "
                                    f".gitignored paths are skipped); point adapt at a folder of Python code")
    if cfg.general is not None and not Path(cfg.general).exists():
        raise CodecompleteError(f"--general {cfg.general} does not exist; pass a corpus or a folder of Python code")
    pick_device(cfg.device)
    ckpt = load_checkpoint(cfg.base)  # the context it trains with is the one the training loop gives it
    return Base(ckpt.model.config.block_size, ckpt.tokenizer.sha256, ckpt.tokenizer.has_fim, ckpt.completion, ckpt.provenance)


# -- the held-out files -----------------------------------------------------------------------
def commit_times(folder: Path) -> dict[str, int] | None:
    """Each file's last commit time by its path under folder; None outside a git repository (or without git)."""
    try:
        log = subprocess.run(["git", "-c", "core.quotePath=false", "-C", str(folder), "log", "--format=%x00%ct", "--name-only",
                              "--relative", "--no-renames", "--", "."], capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=300, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    times: dict[str, int] = {}
    when = 0
    for line in log.splitlines():  # newest commit first: a file's first mention is its last change
        if line.startswith("\0"):
            when = int(line[1:])
        elif line:
            times.setdefault(line, when)
    return times


def hold_out(corpus: Path, folders: list[str], share: float) -> dict[str, Any]:
    """The newest files (last commit; files git does not know yet count as newest) until they hold
    `share` of the bytes, at least one file and never all; by hash where a folder is no repository."""
    from codecomplete.train.corpus import iter_documents

    docs = [(f"{d.repo}/{d.path}", d.repo, d.path, len(d.text.encode("utf-8"))) for d in iter_documents(corpus)]
    if len(docs) < 2:
        raise CodecompleteError(f"adapt needs 2 or more Python files that pass the filters (one to learn from, one to check on); "
                                f"{', '.join(folders)} has {len(docs)}: point it at a larger project")
    git = {f"local/{Path(f).name}": commit_times(Path(f)) for f in folders}  # collect names a folder's files so

    def newest_first(doc: tuple[str, str, str, int]) -> tuple[float, str]:
        key, repo, path, _ = doc
        times = git.get(repo)
        return -(0 if times is None else times.get(path, math.inf)), hashlib.sha1(key.encode()).hexdigest()

    held, size, total = [], 0, sum(d[3] for d in docs)
    for key, _, _, n_bytes in sorted(docs, key=newest_first)[:-1]:
        if held and size >= share * total:
            break
        held.append(key)
        size += n_bytes
    by = "recency" if any(t is not None for t in git.values()) else "hash"
    return {"by": by, "files": held, "bytes": size, "project_files": len(docs), "project_bytes": total}


# -- the run ------------------------------------------------------------------------------------
def run_adapt(cfg: AdaptConfig, base: Base, overwrite: bool = False, on_event: Event | None = None) -> dict[str, Any]:
    """Collect, hold out, prepare, fine-tune, compare; each step skipped when an earlier run did it."""
    from codecomplete.train.cli import run_collect, run_prepare

    emit = on_event or (lambda event: None)
    out = Path(cfg.out)
    if overwrite and out.exists():
        shutil.rmtree(out)  # plan() made sure it holds an adaptation
    saved = read_state(out)
    if saved is not None and "comparison" in saved:
        console.print(f"{out} holds a finished adaptation: its results again (pass --overwrite to adapt to the project as it is now)")
    fresh, existed = saved is None, out.exists()
    state = saved or {"format_version": FORMAT_VERSION, "tokenizer_sha256": base.tokenizer_sha256}
    state["config"] = asdict(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_state(out, state)
        if not (out / "corpus" / "summary.json").exists():
            emit(_progress("collect", 0, "collecting the project's Python files"))
            run_collect([Path(f) for f in cfg.folders], out / "corpus", max_bytes=MAX_FILE_BYTES, keep_tests=cfg.keep_tests,
                        project=True, overwrite=True)
        if "split" not in state:
            state["split"] = hold_out(out / "corpus", cfg.folders, cfg.heldout)
            write_state(out, state)
        if not (out / "data" / "meta.json").exists():
            emit(_progress("prepare", 2, "encoding it with the base model's tokenizer"))
            run_prepare(out / "corpus", Path(cfg.base) / "tokenizer.json", out / "data", val_files=state["split"]["files"], overwrite=True)
        check_tokens(out / "data", base.block_size)
        if cfg.replay and not (out / "replay" / "meta.json").exists():
            emit(_progress("prepare", 4, "encoding other code to replay beside the project's"))
            write_replay(out / "replay-corpus")
            run_prepare(out / "replay-corpus", Path(cfg.base) / "tokenizer.json", out / "replay", overwrite=True)
    except BaseException:
        if fresh:  # nothing worth keeping yet: leave `out` as it was (absent, or empty)
            for path in [out] if not existed else list(out.iterdir()):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise
    if "trained" not in state:
        state["trained"] = fine_tune(cfg, base, state["split"], emit)
        write_state(out, state)
    blend_with_base(out / "best", cfg.base, cfg.blend)
    inherit_completion(out / "best", base.completion)
    if "comparison" not in state:
        from codecomplete.train.adapt_eval import compare

        message = "comparing the base and the adapted model"
        state["comparison"] = compare(cfg, state["split"]["files"], lambda done: emit(_progress("compare", 85 + 15 * done, message)))
        write_state(out, state)
    return state


def write_replay(corpus: Path) -> None:
    """REPLAY_BYTES of the standard library as a corpus, after (never among) the files of the
    general set that the comparison evaluates on by default."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codecomplete.train.adapt_eval import GENERAL_FILES, general_documents
    from codecomplete.train.collect import SCHEMA, SHARD_GLOB, git_blob_sha, row

    _, docs = general_documents(None, count=10**9, skip=GENERAL_FILES, max_bytes=REPLAY_BYTES)
    if len(docs) < 2:
        raise CodecompleteError(f"found {len(docs)} files of this Python's standard library to replay beside the project; "
                                f"pass --replay 0 to fine-tune on the project alone")
    rows = [row("stdlib", name, git_blob_sha(data := text.encode("utf-8", "surrogatepass")), len(data), text) for name, text in docs]
    corpus.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), corpus / SHARD_GLOB.replace("*", "00000"), compression="zstd")


def _progress(phase: str, percent: float, message: str) -> dict[str, Any]:
    return {"event": "progress", "phase": phase, "percent": int(percent), "message": message}


def check_tokens(data: Path, block_size: int) -> None:
    from codecomplete.train.prepare import read_meta

    splits = read_meta(data)["splits"]
    for split, what, fix in (("train", "to learn from", ""), ("val", "held out", ", or hold out a larger share with --heldout")):
        if splits[split]["tokens"] <= block_size:
            raise CodecompleteError(f"the project's files {what} hold {splits[split]['tokens']} tokens, fewer than one context "
                                    f"window of the base model ({block_size + 1}); point adapt at more code{fix}")


def fine_tune(cfg: AdaptConfig, base: Base, split: dict[str, Any], emit: Event) -> dict[str, Any]:
    """The training loop from the base's weights; returns what it did (steps, tokens, minutes, how it ended)."""
    from codecomplete.engine.checkpoint import read_config
    from codecomplete.engine.device import pick_device
    from codecomplete.train.cli import train_with_progress
    from codecomplete.train.loop import METRICS_FILE, TrainConfig, portable_path
    from codecomplete.train.run_folder import SLOTS

    out = Path(cfg.out)
    batch, lr = BATCH_LR[pick_device(cfg.device).type]
    provenance = {"init_from": portable_path(cfg.base, out), "preset": base.provenance.get("preset"),
                  "adapt": {"base": portable_path(cfg.base, out), "project": [Path(f).name for f in cfg.folders],
                            "files": split["project_files"] - len(split["files"]), "heldout_files": len(split["files"]),
                            "heldout_by": split["by"]}}
    train = TrainConfig(data=str(out / "data"), out=str(out), init_from=cfg.base, minutes=cfg.minutes, max_steps=cfg.max_steps,
                        batch_size=cfg.batch_size or batch, lr=cfg.lr or lr, warmup_steps=cfg.warmup_steps,
                        fim_rate=0.5 if base.has_fim else 0.0, eval_every=cfg.eval_every, eval_tokens=cfg.eval_tokens,
                        replay_data=str(out / "replay") if cfg.replay else None, replay=cfg.replay,
                        seed=cfg.seed, device=cfg.device, provenance=provenance)
    # The base's own held-out loss is the first mark to beat: fine-tuning that only makes it worse stops.
    base_loss = base_heldout_loss(cfg, out / "data")
    stop = EarlyStop(cfg.patience, cfg.min_delta, best=base_loss).replay(out / METRICS_FILE)

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] in ("step", "eval"):
            done = max([event["elapsed"] / (cfg.minutes * 60)] + ([event["step"] / cfg.max_steps] if cfg.max_steps else []))
            held = f", held-out loss {stop.best:.3f}" if stop.best < math.inf else ""
            emit(_progress("train", 5 + 80 * min(done, 1.0), f"fine-tuning: step {event['step']}{held}"))
        stop(event)

    try:
        final, early = train_with_progress(train, resume=any((out / slot).exists() for slot, _ in SLOTS), on_event=on_event), False
    except StoppedEarly as e:
        final, early = e.record, True
        console.print(f"stopped early at step {final['step']}: the held-out loss has not fallen by {cfg.min_delta:g} "
                      f"for {cfg.patience} evaluations (best {stop.best:.4f})")
    best = read_config(out / "best")["provenance"]["val_loss"]
    return {"step": final["step"], "tokens": final["tokens"], "minutes": final["elapsed"] / 60, "stopped_early": early,
            "best_heldout_loss": best, "base_heldout_loss": base_loss, "batch_size": train.batch_size, "lr": train.lr}


def base_heldout_loss(cfg: AdaptConfig, data: Path) -> float:
    """The base's loss on the held-out files, over the windows the training loop evaluates (for a
    split in one shard, lm_metrics takes the same evenly spaced windows)."""
    import numpy as np

    from codecomplete.engine.checkpoint import load_checkpoint
    from codecomplete.engine.device import pick_device
    from codecomplete.train.data import TokenShards
    from codecomplete.train.evaluate import lm_metrics

    val = TokenShards(data, "val")
    with console.status("the base model's held-out loss"):
        model = load_checkpoint(cfg.base, pick_device(cfg.device)).model
        return lm_metrics(model, np.concatenate([np.asarray(a) for a in val.arrays]), val.bytes, cfg.eval_tokens)["loss"]


def blend_with_base(best: Path, base: str, share: float) -> None:
    """best's weights become share of themselves and the rest the base's, once: the share is then
    in best's provenance, and the folder is swapped in whole, so a rerun never blends twice."""
    import torch

    from codecomplete.engine.checkpoint import load_checkpoint, save_checkpoint

    if share >= 1:
        return
    tuned = load_checkpoint(best)
    adapt = tuned.provenance.get("adapt", {})
    if "blend" in adapt:
        return
    start = dict(load_checkpoint(base).model.named_parameters())
    with torch.no_grad():
        for name, p in tuned.model.named_parameters():  # tied weights are one parameter, blended once
            p.lerp_(start[name].to(p.dtype), 1 - share)
    save_checkpoint(best, tuned.model, tuned.tokenizer, {**tuned.provenance, "adapt": {**adapt, "blend": share}})
    inherit_completion(best, tuned.completion)  # save_checkpoint writes the model's config alone


def inherit_completion(best: Path, completion: dict[str, float]) -> None:
    """The base's engine settings (config.json's "completion", e.g. how much the prompt's n-grams
    weigh) go with its fine-tuned weights: they were tuned for a model this one only continues."""
    path = best / "config.json"
    config = json.loads(path.read_text())
    if completion and config.get("completion") != completion:
        config["completion"] = completion
        tmp = best / ".config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, path)
