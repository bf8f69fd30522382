"""Windows of the project's other files that look like the code before the cursor.

Sparse retrieval as RepoCoder and Copilot's neighbouring tabs do it, matched on what comes before
and returned with what comes after: each file is cut into windows of `window` lines every `stride`
lines; a window is known by the identifiers of its first `match` lines, and the query is the
identifiers of the last few whole lines before the cursor. The best window's later lines are
what followed code like the user's, the lines most likely to be written next (CrossCodeEval uses
the chunk after the hit the same way). Jaccard similarity ranks; identifiers found in more than
a fifth of the windows (and in more than 20: `self`, `os`, `name`) are left out on both sides, as
they match everything. Everything is numpy arrays: an inverted index (identifier -> windows) makes
a query one bincount over the postings of its identifiers.
"""
from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STOPWORDS = frozenset(keyword.kwlist) | {"self", "cls"}
COMMON = 0.2  # of all windows: an identifier found in more says nothing about which one fits


def identifiers(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text)) - STOPWORDS


@dataclass(frozen=True)
class Snippet:
    path: str
    first_line: int  # 0-based
    text: str  # whole lines, each ending in a line break
    score: float  # Jaccard similarity with the query, 0..1


@dataclass(frozen=True)
class WindowShape:
    window: int = 12  # lines a snippet holds
    match: int = 6  # its first lines, which retrieval compares with the query
    stride: int = 2


@dataclass(frozen=True)
class FileWindows:
    """One file cut into windows: what a rebuild can reuse while the file is unchanged."""

    text: str
    line_starts: np.ndarray  # offset of each line in text, then len(text)
    starts: np.ndarray  # first line of each window
    pairs: np.ndarray  # (P, 2) unique (window, identifier id) of each window's first `match` lines

    @classmethod
    def of(cls, text: str, shape: WindowShape, vocab: dict[str, int]) -> FileWindows:
        """vocab: identifier -> id, shared by a project's files and grown here."""
        breaks = [m.end() for m in re.finditer("\n", text)]
        line_starts = np.asarray([0, *breaks, *([] if text.endswith("\n") or not text else [len(text)])], dtype=np.int64)
        lines = len(line_starts) - 1
        starts = np.arange(0, max(lines - shape.window, 0) + 1, shape.stride, dtype=np.int64) if lines else np.empty(0, np.int64)
        if len(starts) and starts[-1] + shape.window < lines:
            starts = np.append(starts, lines - shape.window)  # the file's last lines get a window too
        found = [(m.start(), m.group()) for m in IDENTIFIER.finditer(text) if m.group() not in STOPWORDS]
        if not found or not len(starts):
            return cls(text, line_starts, starts, np.empty((0, 2), dtype=np.int64))
        at = np.asarray([p for p, _ in found], dtype=np.int64)
        ids = np.asarray([vocab.setdefault(n, len(vocab)) for _, n in found], dtype=np.int64)
        line = np.searchsorted(line_starts, at, side="right") - 1
        # window w holds line L in its match lines when starts[w] <= L < starts[w] + match
        first = np.searchsorted(starts, line - shape.match, side="right")
        last = np.searchsorted(starts, line, side="right")
        count = last - first
        window = np.repeat(first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        pairs = np.unique(np.stack([window, np.repeat(ids, count)], axis=1), axis=0)
        return cls(text, line_starts, starts, pairs)

    def lines(self, first: int, count: int) -> str:
        last = min(first + count, len(self.line_starts) - 1)
        return self.text[self.line_starts[first] : self.line_starts[last]]


class SnippetIndex:
    def __init__(self, files: Mapping[str, FileWindows], vocab: Mapping[str, int], shape: WindowShape) -> None:
        self.shape, self.vocab, self.paths = shape, vocab, list(files)
        self.file_of = {p: i for i, p in enumerate(self.paths)}
        self.files = [files[p] for p in self.paths]
        counts = np.asarray([len(f.starts) for f in self.files], dtype=np.int64)
        offsets = np.cumsum(counts) - counts
        self.owner = np.repeat(np.arange(len(self.files)), counts)
        self.start = np.concatenate([f.starts for f in self.files]) if self.files else np.empty(0, np.int64)
        pairs = [f.pairs + [off, 0] for f, off in zip(self.files, offsets) if len(f.pairs)]
        window, ident = np.concatenate(pairs).T if pairs else (np.empty(0, np.int64), np.empty(0, np.int64))
        df = np.bincount(ident, minlength=len(vocab))
        self.informative = df <= max(COMMON * self.windows, 20)
        keep = self.informative[ident]
        window, ident = window[keep], ident[keep]
        self.sizes = np.bincount(window, minlength=self.windows)
        order = np.argsort(ident, kind="stable")
        self.postings = window[order]  # windows of identifier t: postings[offsets[t]:offsets[t + 1]]
        self.offsets = np.searchsorted(ident[order], np.arange(len(vocab) + 1))

    @property
    def windows(self) -> int:
        return len(self.start)

    def query(self, text: str, k: int, exclude: str | None = None, min_score: float = 0.0) -> list[Snippet]:
        """Up to k windows most like text, best first, at most one per file, none of `exclude`."""
        ids = sorted(t for n in identifiers(text) if (t := self.vocab.get(n, -1)) >= 0 and t < len(self.informative)
                     and self.informative[t])
        if not ids or not self.windows:
            return []
        hits = np.concatenate([self.postings[self.offsets[t] : self.offsets[t + 1]] for t in ids])
        inter = np.bincount(hits, minlength=self.windows)
        score = inter / np.maximum(len(ids) + self.sizes - inter, 1)
        if exclude in self.file_of:
            score[self.owner == self.file_of[exclude]] = 0.0
        out: list[Snippet] = []
        taken: set[int] = set()
        top = np.argpartition(-score, m)[:m] if (m := 8 * k + 8) < self.windows else np.arange(self.windows)
        # Best first, ties to the earlier window: the same index and query give the same snippets.
        for w in top[np.lexsort((top, -score[top]))]:
            if score[w] <= min_score or len(out) == k:
                break
            if (f := int(self.owner[w])) not in taken:
                taken.add(f)
                text = self.files[f].lines(int(self.start[w]), self.shape.window)
                out.append(Snippet(self.paths[f], int(self.start[w]), text, float(score[w])))
        return out


def query_lines(prefix: str, count: int) -> str:
    """The `count` whole lines before the cursor's line: typing within a line keeps the query."""
    done = prefix[: prefix.rfind("\n") + 1]
    return "".join(done.splitlines(keepends=True)[-count:])
