"""An n-gram model of the prompt itself, mixed into the model's next-token distribution.

Code repeats its own names and phrases within a file. A small model trained on a few million
tokens copies from its context poorly, so each decoding step also looks up the longest run of
the latest tokens that occurred earlier in the prompt (before or after the cursor) and moves
probability toward what followed it there: a cache language model in the sense of Tu et al.
(2014) and Hellendoorn & Devanbu (2017). Longer matches earn more trust, and so do longer
prompts: a few tokens are no evidence of a file's habits (copying from `def add(a, b):` wrote
`x = f(1, b):` in the body).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

MAX_ORDER = 8
EVIDENCE = 16  # a prompt of this many tokens earns half the weight; longer ones nearly all
MAX_SHARE = 0.95  # of the next-token probability that all caches together may take from the model


def trust(order: int, weight: float) -> float:
    """Share of the next-token probability given to the cache after a match of `order` tokens."""
    return weight * order / (order + 1)


class NextTokenCache(Protocol):
    """A cache language model: given a row's generated ids, its trust λ and next-token distribution;
    and the tokens it expects next, as a draft for decoding to verify (engine/decoding.py)."""

    weight: float

    def cached(self, generated: list[int]) -> tuple[float, dict[int, float]] | None: ...

    def draft(self, generated: list[int], k: int) -> tuple[int, list[int]]:
        """The length of the match behind the guess (0: none), and up to k tokens."""
        ...


class ContextNgrams:
    """Where each token occurs in a prompt, to find the longest earlier match of the latest tokens."""

    def __init__(self, ids: list[int], separators: frozenset[int], weight: float, tail: list[int] | None = None) -> None:
        """tail: what precedes the generated tokens, when ids are not the prompt itself (retrieved
        snippets: their n-grams, matched against the prompt's end)."""
        self.ids, self.separators = ids, separators
        self.tail = (ids if tail is None else tail)[-MAX_ORDER:]
        self.weight = weight * len(ids) / (len(ids) + EVIDENCE)
        self.positions: dict[int, list[int]] = {}  # token -> the positions where it is followed by another
        for i in range(len(ids) - 1):
            if ids[i] not in separators and ids[i + 1] not in separators:
                self.positions.setdefault(ids[i], []).append(i)

    def _matches(self, generated: list[int]) -> Iterator[tuple[int, int]]:
        """(length, position) of every earlier occurrence of the prompt's end plus the generated
        tokens, matched up to MAX_ORDER tokens back; positions ascend. Matches stop at separators."""
        history = self.tail + generated[-MAX_ORDER:]
        for i in self.positions.get(history[-1], ()):
            k = 1
            while k < min(MAX_ORDER, len(history)) and k <= i and self.ids[i - k] == history[-1 - k] and self.ids[i - k] not in self.separators:
                k += 1
            yield k, i

    def lookup(self, generated: list[int]) -> tuple[int, dict[int, int]] | None:
        """The longest match: its length, and how often each token followed it."""
        best, counts = 0, {}
        for k, i in self._matches(generated):
            after = self.ids[i + 1]
            if k > best:
                best, counts = k, {after: 1}
            elif k == best:
                counts[after] = counts.get(after, 0) + 1
        return (best, counts) if best else None

    def draft(self, generated: list[int], k: int) -> tuple[int, list[int]]:
        """The longest match's length and up to k tokens that followed its latest occurrence, up
        to a separator (prompt lookup decoding)."""
        order, at = max(self._matches(generated), default=(0, 0))
        run = self.ids[at + 1 : at + 1 + k] if order else []
        cut = next((j for j, t in enumerate(run) if t in self.separators), len(run))
        return order, run[:cut]

    def cached(self, generated: list[int]) -> tuple[float, dict[int, float]] | None:
        """λ for the longest match and the cache's next-token distribution, or None without a match."""
        found = self.lookup(generated)
        if found is None:
            return None
        order, counts = found
        total = sum(counts.values())
        return trust(order, self.weight), {t: c / total for t, c in counts.items()}


def merged(caches: Sequence[NextTokenCache], generated: list[int]) -> tuple[float, dict[int, float]] | None:
    """Σλ and Σ λ·p_cache over the caches that match (None when none does). The weights may add up
    past one (the prompt's 0.5 and the project's); then they are scaled to MAX_SHARE together."""
    found = [hit for c in caches if c.weight > 0 and (hit := c.cached(generated)) is not None]
    if not found:
        return None
    total = sum(share for share, _ in found)
    scale = min(1.0, MAX_SHARE / total)
    out: dict[int, float] = {}
    for share, dist in found:
        for t, q in dist.items():
            out[t] = out.get(t, 0.0) + share * scale * q
    return total * scale, out


def mix(logits: torch.Tensor, generated: list[list[int]], caches: Sequence[NextTokenCache]) -> torch.Tensor:
    """(rows, V) logits and each row's generated ids -> log of (1 - Σλ)·p_model + Σ λ·p_cache over
    the caches that match the row (the prompt's n-grams, the project's), each λ from its match."""
    out = None
    for row, ids in enumerate(generated):
        if (found := merged(caches, ids)) is None:
            continue
        if out is None:
            out = torch.log_softmax(logits.float(), dim=-1)
        lam, merged_p = found
        tokens = torch.tensor(list(merged_p), device=logits.device)
        cached = torch.tensor(list(merged_p.values()), device=logits.device)
        model_p = out[row, tokens].exp()
        out[row] += math.log1p(-lam)
        out[row, tokens] = torch.log((1 - lam) * model_p + cached)
    return logits if out is None else out
