"""Training batches from token shards: random windows, fill-in-the-middle, fixed eval windows.

A batch depends only on (seed, step, micro-step), never on what came before, so a resumed run
sees exactly the data an uninterrupted one would have seen. Under torchrun each rank takes its
share of a step's micro-steps (train.distributed.micro_steps), so the data order does not
depend on the number of processes either.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.prepare import read_meta


@dataclass(frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    eot: int
    order: str = "spm"  # the tokenizer's (engine/tokenizer.py): "psm" for Hugging Face code models
    file_sep: int = -1  # ends the snippets of a repository-level example (train/prepare.py); -1: none


def fim_permute(doc: np.ndarray, rng: np.random.Generator, t: FimTokens) -> np.ndarray:
    """Suffix-prefix-middle order (StarCoder's SPM): <pre><suf>suffix<mid>prefix middle.

    SPM puts the prefix last in the prompt, so a keystroke only extends the prompt and the
    engine can keep its cached keys/values. A model fine-tuned from a Hugging Face code model
    keeps the PSM order it was trained with: <pre>prefix<suf>suffix<mid>middle. Cut points are
    token boundaries.
    """
    lo, hi = sorted(rng.integers(0, len(doc) + 1, size=2))
    prefix, middle, suffix = doc[:lo], doc[lo:hi], doc[hi:]
    if t.order == "psm":
        return np.concatenate([[t.prefix], prefix, [t.suffix], suffix, [t.middle], middle])
    return np.concatenate([[t.prefix, t.suffix], suffix, [t.middle], prefix, middle])


def apply_fim(window: np.ndarray, rng: np.random.Generator, rate: float, t: FimTokens | None) -> np.ndarray:
    """Rearrange each end-of-text-separated piece of a window with probability rate; keep the length."""
    if rate <= 0 or t is None:
        return window
    pieces, start = [], 0
    for end in [*np.flatnonzero(window == t.eot).tolist(), len(window)]:
        piece = window[start:end]
        if len(piece) > 1 and rng.random() < rate:
            # A repository-level example's snippets stay in front, as in the engine's prompt.
            head = int(np.flatnonzero(piece == t.file_sep)[-1]) + 1 if t.file_sep >= 0 and (piece == t.file_sep).any() else 0
            piece = np.concatenate([piece[:head], fim_permute(piece[head:], rng, t)]) if len(piece) - head > 1 else piece
        pieces.append(piece)
        if end < len(window):
            pieces.append(window[end : end + 1])
        start = end + 1
    return np.concatenate(pieces)[: len(window)]


class TokenShards:
    """The memory-mapped shards of one split."""

    def __init__(self, data: Path, split: str) -> None:
        meta = read_meta(data)
        info = meta["splits"][split]
        self.arrays = [
            np.memmap(data / s["file"], dtype=np.dtype(meta["dtype"]), mode="r", shape=(int(s["tokens"]),))
            for s in info["shards"]
            if int(s["tokens"]) > 0
        ]
        self.tokens = sum(len(a) for a in self.arrays)
        self.bytes = int(info["bytes"])
        self.split = split
        self.data = data

    def check_fits(self, block_size: int) -> None:
        if not any(len(a) > block_size for a in self.arrays):
            raise CodecompleteError(
                f"the {self.split} split of {self.data} has {self.tokens} tokens, too few for one window of {block_size + 1}; "
                f"collect more code or use a smaller --block-size"
            )

    def window(self, shard: int, start: int, length: int) -> np.ndarray:
        return np.asarray(self.arrays[shard][start : start + length], dtype=np.int64)

    def random_batch(self, rng: np.random.Generator, batch_size: int, block_size: int, fim_rate: float,
                     fim: FimTokens | None) -> tuple[torch.Tensor, torch.Tensor]:
        usable = [i for i, a in enumerate(self.arrays) if len(a) > block_size]
        weights = np.array([len(self.arrays[i]) - block_size for i in usable], dtype=np.float64)
        rows = []
        for shard in rng.choice(usable, size=batch_size, p=weights / weights.sum()):
            start = int(rng.integers(0, len(self.arrays[shard]) - block_size))
            rows.append(apply_fim(self.window(shard, start, block_size + 1), rng, fim_rate, fim))
        batch = torch.from_numpy(np.stack(rows))
        return batch[:, :-1], batch[:, 1:]

    def eval_windows(self, block_size: int, max_tokens: int) -> list[tuple[int, int]]:
        """Evenly spaced, non-overlapping windows: the same ones at every evaluation."""
        spans = [(i, s) for i, a in enumerate(self.arrays) for s in range(0, len(a) - block_size, block_size)]
        keep = max(1, max_tokens // block_size)
        if len(spans) > keep:
            spans = [spans[round(j * (len(spans) - 1) / (keep - 1))] for j in range(keep)] if keep > 1 else spans[:1]
        return spans


def batch_rng(seed: int, step: int, micro: int = 0) -> np.random.Generator:
    # The trailing 0 (once a rank) keeps the stream of runs started before ranks shared micro-steps.
    return np.random.default_rng([seed, step, micro, 0])
