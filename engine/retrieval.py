"""Windows of the project's other files that look like the code before the cursor.

Sparse retrieval as RepoCoder and Copilot's neighbouring tabs do it, matched on what comes before
and returned with what comes after: each file is cut into windows of `window` lines every `stride`
lines; a window is known by the names in its first `match` lines, and the query is the names in
the last few whole lines before the cursor. The best window's later lines are what followed code
like the user's, the lines most likely to be written next (CrossCodeEval uses the chunk after the
hit the same way). Jaccard similarity ranks.

The names are the tokenizer's word tokens (`load`, `_config`, ` path`: identifier pieces of two or
more characters, keywords left out), so the token ids the project's n-grams need anyway give the
windows too, without a Python object per name: a window of 2,000 files builds in numpy. Names in
more than a fifth of the windows (and more than 20: `self`, `os`, `name`) are left out on both
sides, as they match everything. An inverted index (name -> windows) makes a query one bincount.
"""
from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from codecomplete.engine.tokenizer import Tokenizer

WORD = re.compile(rb" ?[A-Za-z_][A-Za-z0-9_]+")
STOPWORDS = {w.encode() for w in keyword.kwlist} | {b"self", b"cls"}
COMMON = 0.2  # of all windows: a name found in more says nothing about which one fits


@dataclass(frozen=True)
class Vocabulary:
    """Per token id: is it a name, and how many line breaks it holds."""

    words: np.ndarray  # (V,) bool
    newlines: np.ndarray  # (V,) int32
    canonical: np.ndarray  # (V,) the id of the same name without its leading space, where there is one

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> Vocabulary:
        """Made once per tokenizer (60 ms for 16K tokens): every repository's context shares it."""
        if (known := _VOCABULARIES.get(tokenizer.sha256)) is not None:
            return known
        pieces = [b"" if i in tokenizer.control_ids else tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]
        words = [bool(WORD.fullmatch(p)) and p.strip() not in STOPWORDS for p in pieces]
        bare = {p: i for i, p in enumerate(pieces) if p and not p.startswith(b" ")}
        canonical = [bare.get(p[1:], i) if p.startswith(b" ") else i for i, p in enumerate(pieces)]
        vocabulary = cls(np.asarray(words, dtype=bool), np.asarray([p.count(b"\n") for p in pieces], dtype=np.int32),
                         np.asarray(canonical, dtype=np.int64))
        return _VOCABULARIES.setdefault(tokenizer.sha256, vocabulary)

    def names(self, ids: np.ndarray) -> np.ndarray:
        """The distinct names among token ids: `path` and ` path` are one."""
        ids = np.asarray(ids, dtype=np.int64)
        return np.unique(self.canonical[ids[self.words[ids]]])


_VOCABULARIES: dict[str, Vocabulary] = {}  # by tokenizer sha256


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
    pairs: np.ndarray  # (P, 2) unique (window, name) of each window's first `match` lines

    @classmethod
    def of(cls, text: str, ids: np.ndarray, vocab: Vocabulary, shape: WindowShape) -> FileWindows:
        """ids: text's token ids."""
        breaks = [m.end() for m in re.finditer("\n", text)]
        line_starts = np.asarray([0, *breaks, *([] if text.endswith("\n") or not text else [len(text)])], dtype=np.int32)
        lines = len(line_starts) - 1
        starts = np.arange(0, max(lines - shape.window, 0) + 1, shape.stride, dtype=np.int32) if lines else np.empty(0, np.int32)
        if len(starts) and starts[-1] + shape.window < lines:
            starts = np.append(starts, lines - shape.window)  # the file's last lines get a window too
        ids = np.asarray(ids, dtype=np.int64)
        line = np.cumsum(vocab.newlines[ids]) - vocab.newlines[ids]  # the line each token starts on
        named = vocab.words[ids]
        ids, line = vocab.canonical[ids[named]], line[named]
        if not len(ids) or not len(starts):
            return cls(text, line_starts, starts, np.empty((0, 2), dtype=np.int32))
        # window w holds line L in its match lines when starts[w] <= L < starts[w] + match
        first = np.searchsorted(starts, line - shape.match, side="right").astype(np.int64)
        count = np.searchsorted(starts, line, side="right") - first
        window = np.repeat(first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        # np.unique without counts hashes, 18x slower than a sort on these keys (numpy 2.3)
        key = np.sort((window << 32) | np.repeat(ids, count))
        key = key[np.r_[True, key[1:] != key[:-1]]]
        return cls(text, line_starts, starts, np.stack([key >> 32, key & 0xFFFFFFFF], axis=1).astype(np.int32))

    def lines(self, first: int, count: int) -> str:
        last = min(first + count, len(self.line_starts) - 1)
        return self.text[self.line_starts[first] : self.line_starts[last]]


class SnippetIndex:
    def __init__(self, files: Mapping[str, FileWindows], vocab_size: int, shape: WindowShape) -> None:
        self.shape, self.paths = shape, list(files)
        self.file_of = {p: i for i, p in enumerate(self.paths)}
        self.files = [files[p] for p in self.paths]
        counts = np.asarray([len(f.starts) for f in self.files], dtype=np.int32)
        offsets = np.cumsum(counts, dtype=np.int32) - counts
        self.owner = np.repeat(np.arange(len(self.files), dtype=np.int32), counts)
        self.start = np.concatenate([f.starts for f in self.files]) if self.files else np.empty(0, np.int32)
        pairs = [f.pairs + np.asarray([off, 0], dtype=np.int32) for f, off in zip(self.files, offsets) if len(f.pairs)]
        window, name = np.concatenate(pairs).T if pairs else (np.empty(0, np.int32), np.empty(0, np.int32))
        self.informative = np.bincount(name, minlength=vocab_size) <= max(COMMON * self.windows, 20)
        keep = self.informative[name]
        window, name = window[keep], name[keep]
        self.sizes = np.bincount(window, minlength=self.windows).astype(np.int32)
        order = np.argsort(name, kind="stable")
        self.postings = window[order]  # windows of name t: postings[offsets[t]:offsets[t + 1]]
        self.offsets = np.searchsorted(name[order], np.arange(vocab_size + 1))

    @property
    def windows(self) -> int:
        return len(self.start)

    def query(self, names: np.ndarray, k: int, exclude: str | None = None, min_score: float = 0.0) -> list[Snippet]:
        """Up to k windows most like the query's names (Vocabulary.names), best first, at most one
        per file, none of `exclude`."""
        names = names[self.informative[names]]
        if not len(names) or not self.windows:
            return []
        hits = np.concatenate([self.postings[self.offsets[t] : self.offsets[t + 1]] for t in names])
        window, inter = np.unique(hits, return_counts=True)  # only the windows that share a name
        score = inter / np.maximum(len(names) + self.sizes[window] - inter, 1)
        if exclude in self.file_of:
            score[self.owner[window] == self.file_of[exclude]] = 0.0
        out: list[Snippet] = []
        taken: set[int] = set()
        # A file's neighbouring windows score alike: take enough that k files are among them.
        top = np.argpartition(-score, m)[:m] if (m := 64 * k) < len(window) else np.arange(len(window))
        # Best first, ties to the earlier window: the same index and query give the same snippets.
        for i in top[np.lexsort((window[top], -score[top]))]:
            w, s = int(window[i]), float(score[i])
            if s <= min_score or len(out) == k:
                break
            if (f := int(self.owner[w])) not in taken:
                taken.add(f)
                text = self.files[f].lines(int(self.start[w]), self.shape.window)
                out.append(Snippet(self.paths[f], int(self.start[w]), text, s))
        return out


def query_lines(prefix: str, count: int) -> str:
    """The `count` whole lines before the cursor's line: typing within a line keeps the query."""
    done = prefix[: prefix.rfind("\n") + 1]
    return "".join(done.splitlines(keepends=True)[-count:])
