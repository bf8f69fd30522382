"""The project's n-grams: what followed the latest tokens in the other files of the workspace.

The prompt's own n-grams (context_ngrams.py) see one file, but a project defines a helper in one
module and calls it from the next. This index holds every token of the project's files, sorted
by the tokens before it, latest first, packed into one 64-bit key (four 15-16-bit tokens; three
for vocabularies past 65,535). The longest match of the latest tokens is then two binary searches
per length, and what followed it is a slice: no per-token Python objects, about 14 bytes per
token of the project.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE = 512  # positions counted per match at most: evenly spaced over a long range
MIN_ORDER = 2  # a one-token match over a whole project (after `(`) says little
FULL_TRUST = 4  # tokens of match that earn the whole weight


@dataclass(frozen=True)
class ProjectNgrams:
    keys: np.ndarray  # (N,) uint64, sorted: the `order` tokens up to and including each position
    next_ids: np.ndarray  # (N,) the token that followed
    files: np.ndarray  # (N,) index into paths
    paths: tuple[str, ...]
    bits: int  # per token in a key; the all-ones value pads before a file's first token
    order: int  # tokens per key

    @classmethod
    def build(cls, files: Sequence[tuple[str, Sequence[int]]], vocab_size: int) -> ProjectNgrams:
        """files: (path, token ids) pairs."""
        bits = max(vocab_size.bit_length(), 1)  # every id < vocab_size < 2**bits, so the pad is no id
        order, pad = 64 // bits, (1 << bits) - 1
        small = np.min_scalar_type(pad)  # compared and gathered narrow, widened once for the keys: half the time of uint64
        gap = np.full(order, pad, dtype=small)
        parts, sizes = [gap], np.asarray([len(ids) + order for _, ids in files], dtype=np.int64)
        for _, ids in files:  # each file behind a gap: no context spans two files
            parts += [np.asarray(ids, dtype=small), gap]
        stream = np.concatenate(parts)
        wide = stream.astype(np.uint64)
        key = wide[order:] << np.uint64(bits * (order - 1))
        for j in range(1, order):  # key at p: stream[p], stream[p-1], ... from the high bits down
            key |= wide[order - j : len(stream) - j] << np.uint64(bits * (order - 1 - j))
        nxt = stream[order + 1 :]
        at = np.flatnonzero((stream[order:-1] != pad) & (nxt != pad))  # keys that end on a token with one after
        owner = np.repeat(np.arange(len(files), dtype=np.min_scalar_type(max(len(files) - 1, 0))), sizes)[at]
        key, nxt = key[at], nxt[at]
        sort = np.argsort(key)  # quicksort: twice as fast here, and the same input gives the same order
        return cls(key[sort], nxt[sort], owner[sort], tuple(path for path, _ in files), bits, order)

    @property
    def tokens(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.next_ids.nbytes + self.files.nbytes

    def _range(self, latest_first: list[int], k: int) -> tuple[int, int]:
        """Rows whose key starts with the k latest tokens."""
        low = 0
        for j in range(k):
            low |= latest_first[j] << (self.bits * (self.order - 1 - j))
        high = low | ((1 << (self.bits * (self.order - k))) - 1)
        lo = int(np.searchsorted(self.keys, np.uint64(low), "left"))
        return lo, int(np.searchsorted(self.keys, np.uint64(high), "right"))

    def lookup(self, history: list[int], exclude: int = -1) -> tuple[int, dict[int, int]] | None:
        """The longest match (MIN_ORDER..order tokens) of history's end in the project, leaving
        out file `exclude`: its length and how often each token followed it (sampled)."""
        latest = history[::-1][: self.order]
        for k in range(len(latest), MIN_ORDER - 1, -1):
            lo, hi = self._range(latest, k)
            if hi <= lo:
                continue
            rows = np.linspace(lo, hi - 1, SAMPLE).astype(np.int64) if hi - lo > SAMPLE else slice(lo, hi)
            nxt = self.next_ids[rows]
            if exclude >= 0:
                nxt = nxt[self.files[rows] != exclude]
            if len(nxt):
                ids, counts = np.unique(nxt, return_counts=True)
                return k, dict(zip(ids.tolist(), counts.tolist()))
        return None


class ProjectCache:
    """The project's n-grams for one prompt: its last tokens, then each row's generated ones."""

    def __init__(self, ngrams: ProjectNgrams, prompt_ids: list[int], weight: float, exclude_path: str | None) -> None:
        self.ngrams, self.weight = ngrams, weight
        self.tail = prompt_ids[-ngrams.order :]
        self.exclude = ngrams.paths.index(exclude_path) if exclude_path in ngrams.paths else -1

    def _lookup(self, generated: list[int]) -> tuple[int, dict[int, int]] | None:
        return self.ngrams.lookup(self.tail + generated[-self.ngrams.order :], self.exclude)

    def cached(self, generated: list[int]) -> tuple[float, dict[int, float]] | None:
        """λ for the longest match and the next-token distribution, like ContextNgrams.cached."""
        found = self._lookup(generated)
        if found is None:
            return None
        order, counts = found
        total = sum(counts.values())
        # Trust what the project agrees on after a long match; a short or split one says little
        # (tuned on held-out repositories for the likelihood of what was written next).
        lam = self.weight * min(order / FULL_TRUST, 1.0) ** 2 * max(counts.values()) / total
        return lam, {t: c / total for t, c in counts.items()}

    def draft(self, generated: list[int], k: int) -> tuple[int, list[int]]:
        """The first match's length and up to k tokens, each the one that most often followed the
        tokens before it in the project (the index keeps no runs to copy, so a draft is a chain)."""
        order, run = 0, []
        while len(run) < k and (found := self._lookup(generated + run)) is not None:
            order = order or found[0]
            run.append(max(found[1], key=found[1].get))
        return order, run
