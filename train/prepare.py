"""Encode a corpus into token shards, split into train and validation by repository or file.

Each split is a stream of documents, each followed by end-of-text, in flat uint16/uint32
files. A document lives in exactly one split, so no training window can hold validation text.
Beside the shards: the copy index of the training split (engine/copy_index.py).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from codecomplete.engine.copy_index import INDEX_FILE, MIN_LINE_CHARS, STRIDE, WINDOW, CopyIndex, line_hashes
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.corpus import Document, iter_documents

FORMAT_VERSION = 1
SPLITS = ("train", "val")
SPLIT_BY = ("auto", "repo", "file")
# With fewer repositories than this, a by-repository split would be too coarse to be useful.
MIN_REPOS_FOR_REPO_SPLIT = 20


@dataclass
class PrepareConfig:
    val_fraction: float = 0.05
    split_by: str = "auto"
    text_column: str | None = None
    shard_tokens: int = 100_000_000
    batch_docs: int = 256
    overwrite: bool = False


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    shards: list[dict[str, int | str]] = field(default_factory=list)


def group_key(doc: Document, split_by: str) -> str:
    if split_by == "repo":
        return doc.repo or doc.group
    return f"{doc.repo}/{doc.path}" if doc.path else doc.group


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


def choose_val_groups(keys: set[str], val_fraction: float) -> set[str]:
    """The val_fraction of groups with the smallest hashes: stable, and never empty or all."""
    if len(keys) < 2:
        raise CodecompleteError(f"the corpus has {len(keys)} file/repository group(s); a train/validation split needs at least 2, so collect more code")
    n_val = min(len(keys) - 1, max(1, round(val_fraction * len(keys))))
    return set(sorted(keys, key=_hash)[:n_val])


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class _ShardWriter:
    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.stats = SplitStats()
        self.fh = None
        self.in_shard = 0

    def write(self, ids: list[int], n_bytes: int) -> None:
        if self.fh is None or self.in_shard >= self.shard_tokens:
            self._roll()
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and int(arr.max()) > np.iinfo(self.dtype).max:  # never wrap ids silently
            raise CodecompleteError(f"token id {int(arr.max())} does not fit {self.dtype}; the tokenizer and shard format disagree")
        arr.astype(self.dtype).tofile(self.fh)
        self.in_shard += arr.size
        self.stats.shards[-1]["tokens"] = self.in_shard
        self.stats.documents += 1
        self.stats.tokens += arr.size
        self.stats.bytes += n_bytes

    def _roll(self) -> None:
        self.close()
        name = f"{self.split}_{len(self.stats.shards):03d}.bin"
        self.fh = open(self.out / name, "wb")
        self.in_shard = 0
        self.stats.shards.append({"file": name, "tokens": 0})

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _batches(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for d in docs:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepare(
    corpus: Path,
    tokenizer_path: Path,
    out: Path,
    cfg: PrepareConfig,
    on_docs: Callable[[int], None] | None = None,
) -> dict:
    """Write out/{train,val}_NNN.bin, out/tokenizer.json and out/meta.json; returns the meta."""
    if cfg.split_by not in SPLIT_BY:
        raise CodecompleteError(f"--split-by must be one of {', '.join(SPLIT_BY)}, not {cfg.split_by!r}")
    if not 0 < cfg.val_fraction < 1:
        raise CodecompleteError(f"--val-fraction must be between 0 and 1, not {cfg.val_fraction}")
    tokenizer = Tokenizer.from_file(tokenizer_path)
    if (out / "meta.json").exists() and not cfg.overwrite:
        raise CodecompleteError(f"{out} already holds prepared data; choose another --out or pass --overwrite")

    # Pass 1: the groups (repositories or files), without tokenizing anything.
    repos, files = set(), set()
    for doc in iter_documents(corpus, cfg.text_column):
        repos.add(group_key(doc, "repo"))
        files.add(group_key(doc, "file"))
    split_by = cfg.split_by
    if split_by == "auto":
        split_by = "repo" if len(repos) >= MIN_REPOS_FOR_REPO_SPLIT else "file"
    val_groups = choose_val_groups(repos if split_by == "repo" else files, cfg.val_fraction)

    # Pass 2: encode and append each document to its split.
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # only our own shard names: a half-finished earlier run, or --overwrite
        for old in out.glob(f"{split}_*.bin"):
            old.unlink()
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {s: _ShardWriter(out, s, dtype, cfg.shard_tokens) for s in SPLITS}
    train_lines: set[int] = set()  # for the copy index: lines of training files
    try:
        for batch in _batches(iter_documents(corpus, cfg.text_column), cfg.batch_docs):
            for doc, ids in zip(batch, tokenizer.encode_batch([d.text for d in batch])):
                split = "val" if group_key(doc, split_by) in val_groups else "train"
                writers[split].write(ids + [tokenizer.eot_id], len(doc.text.encode("utf-8")))
                if split == "train":
                    train_lines.update(line_hashes(doc.text))
            if on_docs:
                on_docs(len(batch))
    finally:
        for w in writers.values():
            w.close()

    shards = [np.memmap(out / sh["file"], dtype=dtype, mode="r") for sh in writers["train"].stats.shards if sh["tokens"]]
    index = CopyIndex.build(shards, train_lines)
    index.save(out / INDEX_FILE)
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "special_ids": tokenizer.special_ids,
        "tokenizer_sha256": tokenizer.sha256,
        "corpus": str(corpus),
        "split_by": split_by,
        "val_fraction": cfg.val_fraction,
        "splits": {s: asdict(w.stats) for s, w in writers.items()},
        "copy_index": {"file": INDEX_FILE, "window": WINDOW, "stride": STRIDE, "min_line_chars": MIN_LINE_CHARS,
                       "windows": len(index.windows), "lines": len(index.lines)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_meta(data: Path) -> dict:
    path = data / "meta.json"
    if not path.is_file():
        raise CodecompleteError(f"{data} holds no meta.json; run `codecomplete-train prepare CORPUS --out {data}` first")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CodecompleteError(f"{path} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}; run prepare again")
    return meta
