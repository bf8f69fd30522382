"""Repository context at workspace scale: indexing, memory, retrieval and the first completion.

A workspace of --files Python files (default: 2,000 from this Python's standard library and
site-packages) is walked and indexed the way the language server does it (lsp/workspace.py,
engine/repo_context.py). Then, at random cursors in random files of it:

    retrieval      SnippetIndex.query (inverted index, numpy)   beside   the same Jaccard over Python sets
    project n-grams one ProjectCache lookup per decoding step
    completion     a newly opened file's first completion, with the context and without it

    python benchmarks/repo_context.py --checkpoint models/default --threads 2
"""
from __future__ import annotations

import argparse
import random
import statistics
import sysconfig
import time
import tracemalloc
from pathlib import Path

import torch

from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.project_ngrams import ProjectCache
from codecomplete.engine.repo_context import RepoContext
from codecomplete.engine.retrieval import query_lines
from codecomplete.lsp.workspace import Limits, scan
from codecomplete.models import DEFAULT_CHECKPOINT


def pct(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values):7.2f}  p95 {q[18]:7.2f}"


def workspace(files: int) -> dict[str, str]:
    """files Python files: the standard library first, then site-packages."""
    paths = sysconfig.get_paths()
    texts: dict[str, str] = {}
    for root in (paths["stdlib"], paths["purelib"]):
        left = files - len(texts)
        if left > 0:
            texts |= scan(Path(root), Limits(max_files=left, max_mb=1024)).texts
    return texts


def naive_query(windows: list[tuple[str, int, frozenset[int]]], names: frozenset[int], exclude: str, k: int) -> list[tuple[str, int]]:
    """The peer: Jaccard against every window's set of names, in Python."""
    scored = [(len(names & w) / max(len(names | w), 1), path, start) for path, start, w in windows if path != exclude]
    return [(p, s) for _, p, s in sorted(scored, key=lambda x: -x[0])[:k]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--cursors", type=int, default=200, help="random cursors for retrieval and n-gram lookups")
    ap.add_argument("--completions", type=int, default=40, help="first completions in newly opened files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = CompletionEngine.from_checkpoint(args.checkpoint, "cpu", args.threads)

    t0 = time.perf_counter()
    texts = workspace(args.files)
    walk_s = time.perf_counter() - t0
    mb = sum(map(len, texts.values())) / 2**20

    def build() -> tuple[RepoContext, float]:
        t0 = time.perf_counter()
        repo = RepoContext(engine.tokenizer)
        for path, text in texts.items():
            repo.set_file(path, text)
        repo.build()
        return repo, time.perf_counter() - t0

    repo, build_s = build()  # timed alone: tracemalloc slows numpy's allocations by a third
    tracemalloc.start()
    traced, _ = build()
    index_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del traced
    snap = repo.snapshot
    print(f"workspace: {len(texts)} files, {mb:.1f} MB of Python; walked in {walk_s:.1f} s")
    print(f"index: built in {build_s:.1f} s (tokenize, windows, n-grams); {snap.stats['tokens']:,} tokens, "
          f"{snap.stats['windows']:,} windows; {index_mb:.0f} MB allocated by the build (texts not counted), "
          f"n-gram arrays {snap.stats['ngram_mb']:.0f} MB")

    rng = random.Random(args.seed)
    paths = sorted(p for p, t in texts.items() if len(t) > 200)  # empty __init__.py files have no cursor to take
    cursors = []
    for _ in range(args.cursors):
        path = rng.choice(paths)
        text = texts[path]
        at = text.find("\n", rng.randrange(len(text))) + 1 or len(text)
        cursors.append((path, text[:at]))
    c = repo.config
    fast, slow = [], []
    index, windows = snap.snippets, []
    for f, path in zip(index.files, index.paths):
        for w, start in enumerate(f.starts.tolist()):
            windows.append((path, start, frozenset(f.pairs[f.pairs[:, 0] == w, 1].tolist())))
    vocab = repo._words
    for path, prefix in cursors:
        t = time.perf_counter()
        repo.snippets(path, prefix)
        fast.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        names = frozenset(vocab.names(engine.tokenizer.encode(query_lines(prefix, c.query))).tolist())
        naive_query(windows, names, path, c.max_snippets)
        slow.append((time.perf_counter() - t) * 1000)
    print(f"retrieval, ms ({len(cursors)} cursors):  index {pct(fast)}   |  Python sets (peer) {pct(slow)}   "
          f"({statistics.median(slow) / statistics.median(fast):.0f}x)")

    steps = []
    for path, prefix in cursors:
        ids = engine.tokenizer.encode(prefix[-400:])
        cache = ProjectCache(snap.ngrams, ids, c.ngram_weight, path)
        t = time.perf_counter()
        cache.cached(ids[-3:])
        steps.append((time.perf_counter() - t) * 1000)
    print(f"project n-grams, ms per decoding step and row: {pct(steps)}")

    with_ctx, without = [], []
    for path, prefix in cursors[: args.completions]:
        for out, kw in ((without, {}), (with_ctx, {"repo": repo, "path": path})):
            engine.clear_cache()  # a newly opened file
            engine.complete(prefix, "", n=3, **kw)
            out.append(engine.stats.latency_ms)
    print(f"first completion in a newly opened file, ms ({args.completions}, {args.threads} threads):  "
          f"with context {pct(with_ctx)}   |  without {pct(without)}")


if __name__ == "__main__":
    main()
