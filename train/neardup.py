"""Near-duplicate removal for any corpus: MinHash LSH as BigCode did for The Stack.

Files are shingled into 5-grams of identifier/number tokens; 256 MinHash permutations are cut
into 32 bands of 8, so a pair at Jaccard 0.85 shares some band with probability
1 - (1 - 0.85^8)^32 > 0.9999; each such candidate pair is accepted only when the signatures
estimate Jaccard >= 0.85, which weeds out the extra candidates the generous banding lets in.
Each cluster keeps its first file in corpus order and drops the rest. Nothing here is
GitHub-specific.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.corpus import find_text_column, iter_documents, parquet_files

REPORT_NAME = "neardup.json"
_TOKEN = re.compile(r"[A-Za-z_0-9]+")


@dataclass
class NearDupConfig:
    threshold: float = 0.85  # estimated Jaccard of shingle sets at which files are duplicates
    ngram: int = 5  # tokens per shingle
    num_perm: int = 256  # signature length: ~1 KB of memory per file
    bands: int = 32  # of num_perm / bands rows each: recall first, the estimate decides
    seed: int = 42


@dataclass
class NearDupReport:
    files_in: int
    files_kept: int
    clusters: int  # groups of two or more near-duplicates
    removed: int
    examples: list[dict[str, object]] = field(default_factory=list)  # the largest clusters


class MinHasher:
    def __init__(self, cfg: NearDupConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        # Multiply-shift hashing, (a * x + b) >> 32 in wrapping 64-bit arithmetic: a universal
        # family like BigCode's (a * x + b) mod p, without the slow 64-bit modulus.
        self.a = rng.integers(1, 1 << 63, cfg.num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, cfg.num_perm, dtype=np.uint64)
        self.ngram = cfg.ngram

    def signature(self, text: str) -> np.ndarray:
        """(num_perm,) uint32: the minimum of each permuted shingle hash."""
        tokens = _TOKEN.findall(text)
        n = max(1, len(tokens) - self.ngram + 1)
        shingles = {" ".join(tokens[i : i + self.ngram]) for i in range(n)}
        # crc32, not hash(): the signature must not change between processes.
        hashes = np.fromiter(
            (zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64, count=len(shingles)
        )
        permuted = (hashes[:, None] * self.a + self.b) >> np.uint64(32)  # (shingles, num_perm)
        return permuted.min(axis=0).astype(np.uint32)


def find_clusters(signatures: np.ndarray, cfg: NearDupConfig) -> list[list[int]]:
    """Groups (of 2+) of row indices whose signatures mark them near-duplicates, first = lowest."""
    n, rows = len(signatures), cfg.num_perm // cfg.bands
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for band in range(cfg.bands):
        first_in_bucket: dict[bytes, int] = {}
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for i in range(n):
            j = first_in_bucket.setdefault(block[i].tobytes(), i)
            if j == i:
                continue
            ri, rj = root(i), root(j)
            if ri != rj and np.mean(signatures[i] == signatures[j]) >= cfg.threshold:
                parent[max(ri, rj)] = min(ri, rj)  # the earliest file stays the cluster's root
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def dedupe_corpus(
    corpus: Path,
    out: Path,
    cfg: NearDupConfig | None = None,
    text_column: str | None = None,
    on_doc: Callable[[], None] | None = None,
) -> NearDupReport:
    """Write `corpus` minus its near-duplicates to `out`, file for file, with a report."""
    cfg = cfg or NearDupConfig()
    _check(corpus, out, cfg)
    hasher = MinHasher(cfg)
    labels, signatures = [], []
    for doc in iter_documents(corpus, text_column):
        signatures.append(hasher.signature(doc.text))
        labels.append(f"{doc.repo}/{doc.path}".strip("/") or doc.group)
        if on_doc is not None:
            on_doc()
    matrix = np.stack(signatures) if signatures else np.zeros((0, cfg.num_perm), np.uint32)
    clusters = find_clusters(matrix, cfg)
    drop = {i for group in clusters for i in group[1:]}
    _write_kept(corpus, out, drop, text_column)
    report = NearDupReport(
        files_in=len(labels),
        files_kept=len(labels) - len(drop),
        clusters=len(clusters),
        removed=len(drop),
        examples=[
            {"kept": labels[g[0]], "removed": [labels[i] for i in g[1:]]}
            for g in sorted(clusters, key=len, reverse=True)[:20]
        ],
    )
    (out / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _write_kept(corpus: Path, out: Path, drop: set[int], text_column: str | None) -> None:
    # Same files, same row order and columns, minus the dropped rows. Documents are counted as
    # iter_documents counts them: rows with an empty text are not documents and are kept.
    doc = 0
    root = corpus if corpus.is_dir() else corpus.parent
    for file in parquet_files(corpus):
        table = pq.read_table(file)
        texts = table.column(find_text_column(table.schema, text_column, str(file))).to_pylist()
        keep = []
        for text in texts:
            keep.append(not text or doc not in drop)
            doc += bool(text)
        target = out / file.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        pq.write_table(table.filter(np.array(keep, dtype=bool)), tmp, compression="zstd")
        os.replace(tmp, target)


def _check(corpus: Path, out: Path, cfg: NearDupConfig) -> None:
    if not 0.0 < cfg.threshold <= 1.0:
        raise CodecompleteError(
            f"--threshold {cfg.threshold} is not a Jaccard similarity; use 0 to 1, e.g. 0.85"
        )
    if out.resolve() == corpus.resolve():
        raise CodecompleteError(f"--out {out} is the corpus itself; choose a new folder")
    if out.exists() and any(out.rglob("*.parquet")):
        raise CodecompleteError(
            f"{out} already holds Parquet files; choose an empty folder for --out"
        )
    out.mkdir(parents=True, exist_ok=True)
