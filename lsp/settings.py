"""The `codecomplete` settings section: one dataclass, camelCase on the wire, bad values warned about.

Settings arrive three ways (initializationOptions, workspace/configuration, didChangeConfiguration)
and are laid over each other with `overlay`. A wrong type or an unknown key never fails: the
value before it is kept and a one-line warning says what was wrong and what is used instead.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codecomplete.models import DEFAULT_CHECKPOINT

SECTION = "codecomplete"
LOG_LEVELS = ("error", "warning", "info", "debug")
DEVICES = ("auto", "cuda", "mps", "cpu")  # engine.device.DEVICE_CHOICES, without importing torch
# Keys an editor extension keeps in the same section for itself (vscode-languageclient's
# `codecomplete.trace.server`, the server command); the server ignores them quietly.
CLIENT_KEYS = {"trace", "server", "enable", "enabled"}


def _spec(default: Any, kind: type, ok: Any = None, hint: str = "", nullable: bool = False) -> Any:
    return field(default=default, metadata={"kind": kind, "ok": ok, "hint": hint, "nullable": nullable})


@dataclass(frozen=True)
class Settings:
    checkpoint: str | None = _spec(None, str, nullable=True, hint="a checkpoint folder")
    device: str = _spec("auto", str, lambda v: v in DEVICES, "one of " + ", ".join(DEVICES))
    threads: int = _spec(0, int, lambda v: 0 <= v <= 256, "CPU threads, 0 for PyTorch's choice")
    max_new_tokens: int = _spec(48, int, lambda v: 1 <= v <= 1024, "an integer from 1 to 1024")
    num_suggestions: int = _spec(3, int, lambda v: 1 <= v <= 10, "an integer from 1 to 10")
    temperature: float = _spec(0.0, float, lambda v: 0 <= v <= 5, "a number from 0 (greedy) to 5")
    top_p: float = _spec(1.0, float, lambda v: 0 < v <= 1, "a number in (0, 1]")
    multiline: bool = _spec(False, bool)
    min_score: float = _spec(-3.0, float, hint="a mean log-probability per token, e.g. -3")
    timeout_ms: int = _spec(2000, int, lambda v: v >= 10, "milliseconds, at least 10")
    log_level: str = _spec("info", str, lambda v: v in LOG_LEVELS, "one of " + ", ".join(LOG_LEVELS))
    acceptance_log: bool = _spec(True, bool)
    acceptance_log_path: str | None = _spec(None, str, nullable=True, hint="a file path")
    copy_index: str | None = _spec(None, str, nullable=True, hint="a prepared data folder or its copy_index.npz")
    repo_context: bool = _spec(True, bool)
    repo_snippets: bool = _spec(True, bool)
    repo_ngrams: bool = _spec(True, bool)
    repo_context_max_files: int = _spec(5000, int, lambda v: 0 <= v <= 1_000_000, "files per folder, 0 to 1000000")
    repo_context_max_mb: float = _spec(20.0, float, lambda v: 0 <= v <= 4096, "megabytes per folder, 0 to 4096")

    def to_wire(self) -> dict[str, Any]:
        return {camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


FIELDS = {camel(f.name): f for f in dataclasses.fields(Settings)}


def section_of(raw: Any, wrapped: bool = False) -> dict[str, Any] | None:
    """Our settings object out of what a client sent: {"codecomplete": {...}} (didChangeConfiguration,
    and how Neovim users write init_options) or, unless wrapped, the object itself. None: none there."""
    if not isinstance(raw, dict) or not raw:
        return None
    inner = raw.get(SECTION)
    if isinstance(inner, dict):
        return inner
    return None if wrapped or SECTION in raw else raw


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """value as the field's type, or raise ValueError."""
    kind, meta = f.metadata["kind"], f.metadata
    if value is None and meta["nullable"]:
        return None
    if kind is bool and isinstance(value, bool):
        out: Any = value
    elif kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is int and not float(value).is_integer():
            raise ValueError
        out = kind(value)
    elif kind is str and isinstance(value, str):
        out = value.strip().lower() if f.name in ("device", "log_level") else value
        out = "warning" if out == "warn" else out
    else:
        raise ValueError
    if meta["ok"] is not None and not meta["ok"](out):
        raise ValueError
    return out


def overlay(base: Settings, section: dict[str, Any] | None, origin: str) -> tuple[Settings, list[str]]:
    """base with the entries of section (camelCase keys) that are valid, and a warning for each other."""
    if not section:
        return base, []
    changes, warnings = {}, []
    for key, value in section.items():
        f = FIELDS.get(key) or FIELDS.get(camel(snake(key)))  # max_new_tokens works too
        if f is None:
            if key not in CLIENT_KEYS:
                warnings.append(f"unknown setting {SECTION}.{key} (from {origin}) is ignored")
            continue
        if value is None and not f.metadata["nullable"]:
            continue  # an editor's "unset": keep what is there
        try:
            changes[f.name] = _checked(f, value)
        except ValueError:
            kind = f.metadata["kind"].__name__
            hint = f.metadata["hint"] or {"bool": "true or false"}.get(kind, kind)
            warnings.append(f"{SECTION}.{camel(f.name)} = {value!r} (from {origin}) is not {hint}; "
                            f"keeping {getattr(base, f.name)!r}")
    return dataclasses.replace(base, **changes), warnings


def default_checkpoint() -> Path:
    """$CODECOMPLETE_CHECKPOINT, else the model shipped in the package (codecomplete.models)."""
    env = os.environ.get("CODECOMPLETE_CHECKPOINT")
    return Path(env).expanduser() if env else DEFAULT_CHECKPOINT


def checkpoint_path(settings: Settings, root: Path | None) -> Path:
    """The checkpoint folder to serve; a relative setting is taken from the workspace root."""
    if not settings.checkpoint:
        return default_checkpoint()
    path = Path(settings.checkpoint).expanduser()
    return path if path.is_absolute() or root is None else root / path
