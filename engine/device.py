"""Pick the compute device: cuda > mps > cpu, or what the user asked for."""
from __future__ import annotations

import torch

from codecomplete.engine.errors import CodecompleteError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def pick_device(requested: str = "auto") -> torch.device:
    if requested not in DEVICE_CHOICES:
        raise CodecompleteError(f"unknown device {requested!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise CodecompleteError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise CodecompleteError("device 'mps' requested but this PyTorch has no Apple MPS; use --device auto or cpu")
    return torch.device(requested)
