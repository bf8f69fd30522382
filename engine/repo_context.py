"""A project's other files as the engine's memory: retrieved snippets and the project's n-grams.

Fed texts, never paths to read: the language server's workspace index decides which files are
the project (lsp/workspace.py), `eval --repo-context` uses the other files of a held-out
repository. Files change from any thread; a build analyses only the files that changed since the
last one and swaps in a new snapshot, which queries read without locks.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from codecomplete.engine.project_ngrams import ProjectNgrams
from codecomplete.engine.retrieval import (
    FileWindows,
    Snippet,
    SnippetIndex,
    Vocabulary,
    WindowShape,
    query_lines,
)
from codecomplete.engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class RepoContextConfig:
    snippets: bool = True  # retrieved windows in front of the file in the prompt
    project_ngrams: bool = True  # the project's n-grams mixed into each decoding step
    window: int = 12  # lines per retrieved window ...
    match: int = 6  # ... found by its first lines (the rest is what followed them)
    stride: int = 2
    query: int = 4  # lines before the cursor's line that retrieval matches
    max_snippets: int = 2
    min_score: float = 0.3  # Jaccard below this is not worth the prompt's tokens (0.15 to 0.5 tried)
    snippet_share: float = 0.15  # of the prompt's token budget, at most: the file's own lines matter more
    ngram_weight: float = 0.4  # the most the project's n-grams may weigh against the model
    snippet_weight: float = 0.4  # the most the retrieved snippets' own n-grams may weigh
    max_ngram_tokens: int = 8_000_000  # project tokens the n-gram index holds at most (~14 B each)


@dataclass(frozen=True)
class _Analysed:
    windows: FileWindows  # holds the text
    ids: np.ndarray  # int32 token ids (a Python list would take 9x the memory), for the n-grams


@dataclass(frozen=True)
class Snapshot:
    snippets: SnippetIndex
    ngrams: ProjectNgrams | None
    stats: dict[str, float] = field(default_factory=dict)


class RepoContext:
    def __init__(self, tokenizer: Tokenizer, config: RepoContextConfig | None = None) -> None:
        self.tokenizer, self.config = tokenizer, config or RepoContextConfig()
        self._files: dict[str, str] = {}
        self._analysed: dict[str, _Analysed] = {}
        self._words = Vocabulary.of(tokenizer)
        c = self.config
        self._shape = WindowShape(c.window, c.match, c.stride)
        self._lock = threading.Lock()
        self._version, self._built_version = 0, -1
        self.snapshot: Snapshot | None = None

    def set_file(self, path: str, text: str) -> None:
        with self._lock:
            if self._files.get(path) != text:
                self._files[path] = text
                self._version += 1

    def remove_file(self, path: str) -> None:
        with self._lock:
            if self._files.pop(path, None) is not None:
                self._version += 1

    @property
    def stale(self) -> bool:
        return self._version != self._built_version

    def build(self) -> Snapshot:
        """Analyse the files that changed, then swap in a snapshot of all of them."""
        t0 = time.perf_counter()
        with self._lock:
            files, version = dict(self._files), self._version
        changed = [p for p, text in files.items() if p not in self._analysed or self._analysed[p].windows.text != text]
        for start in range(0, len(changed), 256):  # tokenized in parallel, a batch at a time
            batch = changed[start : start + 256]
            for path, ids in zip(batch, self.tokenizer.encode_batch([files[p] for p in batch])):
                ids = np.asarray(ids, dtype=np.int32)
                windows = FileWindows.of(files[path], ids, self._words, self._shape)
                self._analysed[path] = _Analysed(windows, ids if self.config.project_ngrams else ids[:0])
        analysed = self._analysed = {p: self._analysed[p] for p in sorted(files)}
        ngrams = None
        if self.config.project_ngrams:
            budget, chosen = self.config.max_ngram_tokens, []
            for path, a in analysed.items():
                if len(a.ids) <= budget:
                    chosen.append((path, a.ids))
                    budget -= len(a.ids)
            ngrams = ProjectNgrams.build(chosen, self.tokenizer.vocab_size)
        index = SnippetIndex({p: a.windows for p, a in analysed.items()}, self.tokenizer.vocab_size, self._shape)
        stats = {"files": len(analysed), "windows": index.windows, "tokens": ngrams.tokens if ngrams else 0,
                 "ngram_mb": ngrams.nbytes / 2**20 if ngrams else 0.0, "build_s": time.perf_counter() - t0,
                 "built_at": time.time()}
        self.snapshot, self._built_version = Snapshot(index, ngrams, stats), version
        return self.snapshot

    def snippets(self, path: str | None, prefix: str) -> list[Snippet]:
        """The windows of other files most like the lines before the cursor's line."""
        return self.retrieve(path, query_lines(prefix, self.config.query))

    def retrieve(self, path: str | None, query: str) -> list[Snippet]:
        """The windows of files other than path most like query."""
        snap, c = self.snapshot, self.config
        if snap is None or not c.snippets or not query:
            return []
        return snap.snippets.query(self._words.names(self.tokenizer.encode(query)), c.max_snippets, path, c.min_score)

    def describe(self) -> dict[str, object]:
        snap = self.snapshot
        return {"config": asdict(self.config), **(snap.stats if snap else {}), "stale": self.stale}
