"""The run folder's checkpoint slots, written so that no fault loses more than one interval.

    last/ + trainer_state.pt        the newest checkpoint and the optimizer state that goes with it
    prev/ + trainer_state.prev.pt   the one before: resume falls back to it if last/ is damaged
    best/                           lowest validation loss

Weights stay plain checkpoints (engine.checkpoint); the state beside them is loaded with
weights_only. A save stages both files in full, then swaps them in by renames.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from codecomplete.engine.checkpoint import load_checkpoint, save_checkpoint
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT, GPTConfig
from codecomplete.engine.tokenizer import Tokenizer

STATE_FILE = "trainer_state.pt"
# (checkpoint folder, trainer state), newest first: the slots resume tries in turn.
SLOTS = (("last", STATE_FILE), ("prev", "trainer_state.prev.pt"))
STAGED = (".last.next", ".trainer_state.next.pt")  # written in full before any rename


def write_failure(e: Exception, out: Path) -> str:
    """One line for a checkpoint that could not be written; a full disk says so."""
    # safetensors reports I/O errors as SafetensorError with the OS error in its text
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) or "StorageFull" in str(e)
    what = "the disk is full" if full else f"could not write ({e})"
    return (f"{what} while writing a checkpoint to {out}; the checkpoints already there are intact: "
            f"free space (or pass another --out) and run the same command with --resume")


def read_slot(out: Path, slot: str, state_file: str, config: GPTConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ckpt = load_checkpoint(out / slot)  # a damaged folder is a one-line CodecompleteError
    if ckpt.model.config != config:
        raise CodecompleteError(f"it holds a {ckpt.model.config} model, not the {config} of this run")
    try:
        state = torch.load(out / state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated or not a state file: all mean this slot is unusable
        raise CodecompleteError(f"{state_file} is missing or unreadable ({type(e).__name__})") from e
    if state.get("step") != ckpt.provenance.get("step"):
        raise CodecompleteError(f"{state_file} is from step {state.get('step')} but the weights from step {ckpt.provenance.get('step')} (a save was cut short)")
    return ckpt.model.state_dict(), state


def set_aside(out: Path, names: tuple[str, ...]) -> None:
    """Move a damaged slot to NAME.bad, so the next save does not rotate it over the good prev/."""
    for name in names:
        path, bad = out / name, out / f"{name}.bad"
        if path.exists():
            if bad.is_dir():
                shutil.rmtree(bad)
            os.replace(path, bad)  # a file replaces an old NAME.bad file by itself


def write_slot(out: Path, model: GPT, tokenizer: Tokenizer, state: dict[str, Any], provenance: dict[str, Any], best: bool) -> None:
    """Stage last/ and its state in full, then rotate by renames: last -> prev, staged -> last."""
    staged, staged_state = (out / name for name in STAGED)
    for leftover in [*out.glob(".*.tmp-*"), *out.glob(".*.old-*")]:  # engine.checkpoint's, from a killed save
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        save_checkpoint(staged, model, tokenizer, provenance)
        with open(staged_state, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if best:
            save_checkpoint(out / "best", model, tokenizer, provenance)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        staged_state.unlink(missing_ok=True)
        raise
    # Renames only from here: they need no space, and a kill between two of them leaves a
    # slot whose weights and state disagree on the step, which resume detects and skips.
    (last, last_state), (prev, prev_state) = ((out / a, out / b) for a, b in SLOTS)
    if last.exists():
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(last, prev)
        if last_state.exists():
            os.replace(last_state, prev_state)
    os.replace(staged_state, last_state)
    os.replace(staged, last)
