"""Scores for one completion against its target: pure functions on strings.

Exact match and edit similarity follow CodeXGLUE's line-level evaluator: exact match compares
whitespace-separated tokens; edit similarity is fuzzywuzzy's `fuzz.ratio` (indel distance:
2·LCS / (len(a) + len(b))) of the stripped strings, here on a 0–1 scale.
"""
from __future__ import annotations

import re

from codecomplete.engine.decoding import loop_period


def exact_match(prediction: str, target: str) -> bool:
    return prediction.split() == target.split()


def lcs_length(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for ca in a:
        prev_diag = 0
        for j, cb in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if ca == cb else max(row[j], row[j - 1])
    return row[-1]


def edit_similarity(prediction: str, target: str) -> float:
    a, b = prediction.strip(), target.strip()
    if not a and not b:
        return 1.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


def first_lines(text: str, k: int) -> str:
    return "\n".join(text.split("\n")[:k])


def is_degenerate(text: str) -> bool:
    """A repeated loop: the same word n-gram three times in a row (one word four times) anywhere."""
    words = re.findall(r"\S+", text)
    return any(loop_period(words[: i + 1]) for i in range(len(words)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]
