"""Checkpoint directories: config.json + model.safetensors + tokenizer.json, written atomically."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT, GPTConfig
from codecomplete.engine.tokenizer import Tokenizer

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
TIED = "lm_head.weight"  # shares storage with transformer.wte.weight; stored once


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: Tokenizer
    provenance: dict[str, Any] = field(default_factory=dict)
    # Engine settings tuned for these weights (config.json's optional "completion" section),
    # e.g. {"context_weight": 0.1}: a well-trained model needs less help from the prompt n-grams.
    completion: dict[str, float] = field(default_factory=dict)


def checkpoint_config(model: GPT, tokenizer: Tokenizer, provenance: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "special_ids": tokenizer.special_ids, "sha256": tokenizer.sha256},
        "provenance": provenance,
    }


def save_checkpoint(path: str | Path, model: GPT, tokenizer: Tokenizer, provenance: dict[str, Any] | None = None) -> Path:
    """Write to a temporary sibling folder, then swap it in: readers never see half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k != TIED}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save(tmp / TOKENIZER_FILE)
        config = checkpoint_config(model, tokenizer, provenance or {})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CodecompleteError(f"checkpoint {path} is not a folder; pass a folder holding {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE}")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (path / f).is_file()]
    if missing:
        raise CodecompleteError(f"checkpoint {path} lacks {', '.join(missing)}; point at a folder written by `codecomplete-train train` (e.g. runs/X/best)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CodecompleteError(f"{path / CONFIG_FILE} is not valid JSON ({e}); restore it from the training run") from e
    if not isinstance(config, dict):
        raise CodecompleteError(f"{path / CONFIG_FILE} is not a JSON object; restore it from the training run")
    if config.get("format_version") != FORMAT_VERSION:
        raise CodecompleteError(f"{path / CONFIG_FILE} has format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}; retrain or convert the checkpoint")
    return config


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Checkpoint:
    """Load for inference or fine-tuning; every inconsistency is a one-line CodecompleteError."""
    path = Path(path)
    config = read_config(path)
    completion = completion_settings(path, config)
    try:
        model_config = GPTConfig(**config["model"])
    except (KeyError, TypeError) as e:
        raise CodecompleteError(f"{path / CONFIG_FILE} has a bad 'model' section ({e}); it was written by another version") from e
    tokenizer = Tokenizer.from_file(path / TOKENIZER_FILE)
    expected = config.get("tokenizer")
    recorded = (expected.get("vocab_size"), expected.get("special_ids"), expected.get("sha256")) if isinstance(expected, dict) else None
    if tokenizer.vocab_size > model_config.vocab_size or recorded != (tokenizer.vocab_size, tokenizer.special_ids, tokenizer.sha256):
        raise CodecompleteError(
            f"tokenizer.json in {path} (vocab {tokenizer.vocab_size}) is not the one this model was trained with "
            f"(recorded vocab {recorded[0] if recorded else '?'}, embedding rows {model_config.vocab_size}); put back the tokenizer.json saved with it"
        )
    try:
        state = load_file(str(path / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CodecompleteError(f"{path / WEIGHTS_FILE} is corrupt or truncated ({e}); use another checkpoint (e.g. runs/X/last) or retrain") from e
    model = GPT(model_config)
    mismatch = f"{path / WEIGHTS_FILE} does not fit its {CONFIG_FILE}; the files come from different runs"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise CodecompleteError(f"{mismatch} ({str(e).splitlines()[-1].strip()})") from e
    missing = [k for k in missing if k != TIED]
    if missing or unexpected:
        raise CodecompleteError(f"{mismatch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device=device, dtype=dtype)
    model.eval()
    return Checkpoint(model=model, tokenizer=tokenizer, provenance=config.get("provenance", {}), completion=completion)


def completion_settings(path: Path, config: dict[str, Any]) -> dict[str, float]:
    settings = config.get("completion", {})
    weight = settings.get("context_weight", 0.0) if isinstance(settings, dict) and set(settings) <= {"context_weight"} else None
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < 1:
        raise CodecompleteError(f"{path / CONFIG_FILE}: \"completion\" must be like {{\"context_weight\": 0.1}} (a number from 0 to below 1), "
                                f"not {json.dumps(settings)}; fix or remove that section")
    return {k: float(v) for k, v in settings.items()}
