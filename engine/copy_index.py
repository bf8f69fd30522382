"""Is a completion copied from the training data? A hashed index of training windows and lines.

`prepare` writes it beside the token shards; evaluation uses it to measure memorisation, and
the engine can use it to drop suggestions that reproduce training code verbatim.

Two kinds of copy, by length:
- long: a run of WINDOW tokens found in the training split. The index keeps the hash of the
  WINDOW-token window at every STRIDE-th position, so any copied run of WINDOW + STRIDE - 1
  tokens or more is found for certain, shorter ones (down to WINDOW) by chance.
- short: a whole line (stripped, at least MIN_LINE_CHARS long, so idioms such as
  `if __name__ == "__main__":` do not count) that is a line of some training file, and that
  the completion wrote at least half of (finishing `return` is not copying a line).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from codecomplete.engine.errors import CodecompleteError

WINDOW = 50
STRIDE = 16
MIN_LINE_CHARS = 32
INDEX_FILE = "copy_index.npz"

_MIX = np.uint64(0x9E3779B97F4A7C15)
# One odd multiplier per window position: a polynomial hash that numpy computes with wrapping uint64.
_POWERS = np.random.default_rng(20261129).integers(1, 2**63, size=WINDOW, dtype=np.uint64) | np.uint64(1)


def window_hashes(ids: np.ndarray, stride: int = 1, rows_per_chunk: int = 1 << 16) -> np.ndarray:
    """uint64 hashes of the WINDOW-token windows of ids starting at 0, stride, 2*stride, ..."""
    ids = np.asarray(ids)
    if len(ids) < WINDOW:
        return np.empty(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, WINDOW)[::stride]
    out = np.empty(len(windows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(windows), rows_per_chunk):
            chunk = windows[lo : lo + rows_per_chunk].astype(np.uint64)
            h = (chunk * _POWERS).sum(axis=1, dtype=np.uint64)
            out[lo : lo + rows_per_chunk] = (h ^ (h >> np.uint64(31))) * _MIX
    return out


def line_key(line: str) -> str | None:
    """The form of a line that counts for copies, or None when it is too short to count."""
    text = line.strip()
    return text if len(text) >= MIN_LINE_CHARS else None


def line_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def line_hashes(text: str) -> list[int]:
    return [line_hash(k) for k in map(line_key, text.splitlines()) if k is not None]


class CopyIndex:
    def __init__(self, windows: np.ndarray, lines: np.ndarray) -> None:
        self.windows = np.unique(np.asarray(windows, dtype=np.uint64))  # sorted, for searchsorted
        self.lines = np.unique(np.asarray(lines, dtype=np.uint64))

    @classmethod
    def build(cls, train_ids: Iterable[np.ndarray], line_hash_values: Iterable[int]) -> CopyIndex:
        """From the training split's token arrays (shards) and the hashes of its files' lines."""
        windows = [window_hashes(ids, STRIDE) for ids in train_ids]
        lines = np.fromiter(line_hash_values, dtype=np.uint64)
        return cls(np.concatenate(windows) if windows else np.empty(0, np.uint64), lines)

    def save(self, path: str | Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, windows=self.windows, lines=self.lines, params=np.array([WINDOW, STRIDE, MIN_LINE_CHARS]))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> CopyIndex:
        path = Path(path)
        if path.is_dir():
            path = path / INDEX_FILE
        try:
            with np.load(path) as f:
                params, windows, lines = f["params"].tolist(), f["windows"], f["lines"]
        except (OSError, KeyError, ValueError) as e:
            raise CodecompleteError(f"{path} is not a copy index ({type(e).__name__}); run `codecomplete-train prepare` again to write one") from e
        if params != [WINDOW, STRIDE, MIN_LINE_CHARS]:
            raise CodecompleteError(f"{path} was built with window/stride/line length {params}; run `codecomplete-train prepare` again")
        return cls(windows, lines)

    def __len__(self) -> int:
        return len(self.windows) + len(self.lines)

    def _has(self, table: np.ndarray, values: np.ndarray) -> bool:
        if not len(values) or not len(table):
            return False
        at = np.minimum(np.searchsorted(table, values), len(table) - 1)
        return bool((table[at] == values).any())

    def copied_tokens(self, ids: list[int]) -> bool:
        return self._has(self.windows, window_hashes(np.asarray(ids, dtype=np.int64)))

    def copied_lines(self, before: str, text: str, after: str) -> bool:
        """A line, at least half of it written by text, that is a line of a training file."""
        full, lo, hi = before + text + after, len(before), len(before) + len(text)
        hashes, start = [], 0
        for line in full.split("\n"):
            end = start + len(line)
            key = line_key(line)
            if key is not None and 2 * (min(end, hi) - max(start, lo)) >= len(key):
                hashes.append(line_hash(key))
            start = end + 1
        return self._has(self.lines, np.asarray(hashes, dtype=np.uint64))

    def copied(self, ids: list[int], before: str, text: str, after: str) -> bool:
        """Does inserting text (ids: its tokens) between before and after copy training code?

        before/after: the cursor line's text on either side of the cursor, so a completion that
        finishes a line is judged by the whole line it makes.
        """
        return self.copied_tokens(ids) or self.copied_lines(before, text, after)
