"""Checkpoint directories: config.json + model.safetensors + tokenizer.json, written atomically.

A Hugging Face model folder (engine/hf.py) loads through the same load_checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codecomplete.engine import hf
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT, GPTConfig
from codecomplete.engine.tokenizer import Tokenizer

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
TIED = "lm_head.weight"  # shares storage with transformer.wte.weight (when tied); stored once
log = logging.getLogger("codecomplete.engine")


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
    def fill(tmp: Path) -> None:
        tied = model.config.tie_embeddings
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if not (tied and k == TIED)}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save(tmp / TOKENIZER_FILE)
        config = checkpoint_config(model, tokenizer, provenance or {})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    return write_folder(path, fill)


def write_folder(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """fill() a temporary sibling folder, then swap it in: readers never see half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
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
    """config.json of a checkpoint folder, or of a Hugging Face model folder (then checked by engine.hf)."""
    path = Path(path)
    if not path.is_dir():
        raise CodecompleteError(f"checkpoint {path} is not a folder; pass a folder holding {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE}")
    config = _read_json(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
    if hf.is_hf_config(config):
        hf.weight_files(path)
        if not (path / TOKENIZER_FILE).is_file():
            raise CodecompleteError(f"{path} lacks {TOKENIZER_FILE}; download the model's tokenizer too (huggingface-cli download MODEL)")
        return config
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (path / f).is_file()]
    if missing:
        raise CodecompleteError(f"checkpoint {path} lacks {', '.join(missing)}; point at a folder written by `codecomplete-train train` "
                                f"(e.g. runs/X/best) or a Hugging Face model folder")
    if not isinstance(config, dict):
        raise CodecompleteError(f"{path / CONFIG_FILE} is not a JSON object; restore it from the training run")
    if config.get("format_version") != FORMAT_VERSION:
        raise CodecompleteError(f"{path / CONFIG_FILE} has format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}; retrain or convert the checkpoint")
    return config


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CodecompleteError(f"{file} is not valid JSON ({e}); restore it from the training run or download the model again") from e


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    max_context: int = hf.MAX_CONTEXT) -> Checkpoint:
    """Load for inference or fine-tuning, in dtype (default float32); every inconsistency is a one-line CodecompleteError.

    max_context caps the context of a Hugging Face model (see engine.hf.MAX_CONTEXT).
    """
    path = Path(path)
    config = read_config(path)
    if hf.is_hf_config(config):
        return _load_hf(path, config, device, dtype, max_context)
    completion = completion_settings(path, config)
    try:
        model_config = GPTConfig(**config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CodecompleteError(f"{path / CONFIG_FILE} has a bad 'model' section ({e}); it was written by another version") from e
    tokenizer = Tokenizer.from_file(path / TOKENIZER_FILE)
    expected = config.get("tokenizer")
    recorded = (expected.get("vocab_size"), expected.get("special_ids"), expected.get("sha256")) if isinstance(expected, dict) else None
    if tokenizer.vocab_size > model_config.vocab_size or recorded != (tokenizer.vocab_size, tokenizer.special_ids, tokenizer.sha256):
        raise CodecompleteError(
            f"tokenizer.json in {path} (vocab {tokenizer.vocab_size}) is not the one this model was trained with "
            f"(recorded vocab {recorded[0] if recorded else '?'}, embedding rows {model_config.vocab_size}); put back the tokenizer.json saved with it"
        )
    state = _read_weights(path / WEIGHTS_FILE, "use another checkpoint (e.g. runs/X/last) or retrain")
    model = _build(model_config, state, f"{path / WEIGHTS_FILE} does not fit its {CONFIG_FILE}; the files come from different runs", device, dtype)
    return Checkpoint(model=model, tokenizer=tokenizer, provenance=config.get("provenance", {}), completion=completion)


def _load_hf(path: Path, config: dict[str, Any], device: torch.device | str, dtype: torch.dtype | None, max_context: int) -> Checkpoint:
    model_config = hf.model_config(config, path, max_context)
    settings = _read_json(path / hf.TOKENIZER_CONFIG) if (path / hf.TOKENIZER_CONFIG).is_file() else {}
    tokenizer = hf.tokenizer(path, config, settings if isinstance(settings, dict) else {})
    if tokenizer.vocab_size > model_config.vocab_size:
        raise CodecompleteError(f"{path / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, more than the model's {model_config.vocab_size} "
                                f"embedding rows; it belongs to another model: download this model's tokenizer")
    state: dict[str, torch.Tensor] = {}
    for file in hf.weight_files(path):
        state |= _read_weights(file, "download the model again")
    with torch.device("meta"):
        keys = list(GPT(model_config).state_dict())
    state = hf.to_ours(state, keys, model_config, path)
    model = _build(model_config, state, f"the weights in {path} do not fit its {CONFIG_FILE}; download the model again", device, dtype)
    if not tokenizer.has_fim:
        log.warning("%s: its tokenizer has no fill-in-the-middle tokens, so it completes from the text before the cursor alone", path)
    return Checkpoint(model=model, tokenizer=tokenizer, provenance={"source": "huggingface", "model_type": config["model_type"]})


def _read_weights(file: Path, fix: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CodecompleteError(f"{file} is corrupt or truncated ({e}); {fix}") from e


def _build(config: GPTConfig, state: dict[str, torch.Tensor], mismatch: str, device: torch.device | str, dtype: torch.dtype | None) -> GPT:
    """The model holding state's tensors (cast to dtype, default float32) on device, in eval mode.

    Built on the meta device, so no memory goes to random weights the file replaces (a 7B model
    would need 28 GB for them in float32, and minutes to initialise).
    """
    with torch.device("meta"):
        model = GPT(config)
    for k in list(state):  # one tensor at a time: the file's copy goes as its cast arrives
        state[k] = state[k].to(dtype or torch.float32)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise CodecompleteError(f"{mismatch} ({str(e).splitlines()[-1].strip()})") from e
    missing = [k for k in missing if not (config.tie_embeddings and k == TIED)]
    if missing or unexpected:
        raise CodecompleteError(f"{mismatch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_embeddings:  # assign replaced the embedding's parameter: tie the head to the new one
        model.lm_head.weight = model.transformer.wte.weight
    return model.to(device).eval()


def completion_settings(path: Path, config: dict[str, Any]) -> dict[str, float]:
    settings = config.get("completion", {})
    weight = settings.get("context_weight", 0.0) if isinstance(settings, dict) and set(settings) <= {"context_weight"} else None
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < 1:
        raise CodecompleteError(f"{path / CONFIG_FILE}: \"completion\" must be like {{\"context_weight\": 0.1}} (a number from 0 to below 1), "
                                f"not {json.dumps(settings)}; fix or remove that section")
    return {k: float(v) for k, v in settings.items()}
