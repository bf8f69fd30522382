"""Checkpoints shipped with codecomplete (installed as `codecomplete.models`, inside the wheel)."""

from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default"
