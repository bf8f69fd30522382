"""Encode a corpus into token shards, split into train and validation by repository or file.

Each split is a stream of documents, each followed by end-of-text, in flat uint16/uint32
files. A document lives in exactly one split, so no training window can hold validation text.
Beside the shards: the copy index of the training split (engine/copy_index.py).

With `repo_context` > 0, that share of the files becomes repository-level examples: the file in
chunks, each behind snippets retrieved from the other files of its repository and split, the
way the engine retrieves them and in the layout its prompt uses for a model trained so:
    (<file_sep> path \n snippet)... <file_sep> chunk <eot>
Fill-in-the-middle (train/data.py) leaves the snippets in front and rearranges the chunk.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path

import numpy as np

from codecomplete.engine.copy_index import INDEX_FILE, MIN_LINE_CHARS, STRIDE, WINDOW, CopyIndex, line_hashes
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.prompt import snippet_ids
from codecomplete.engine.repo_context import RepoContext, RepoContextConfig
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
    repo_context: float = 0.0  # share of files written as repository-level examples
    repo_chunk_tokens: int = 352  # of a file, per example; with the snippets, within a 512-token window
    repo_snippet_tokens: int = 69  # what the engine gives snippets in a 512-token window (15% of 464)
    workers: int = 1  # processes that write repository-level examples (retrieval is the slow part)
    # The files (repo/path) that make the validation split, instead of a hashed share: `adapt` holds
    # out a project's newest files.
    val_files: list[str] | None = None


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    shards: list[dict[str, int | str]] = field(default_factory=list)


def available_cpus() -> int:
    """The CPU cores this process may run on (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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

    def write(self, ids: np.ndarray | list[int], n_bytes: int, new_document: bool = True) -> None:
        """new_document: False for the later pieces of a file written as several examples."""
        if self.fh is None or self.in_shard >= self.shard_tokens:
            self._roll()
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and int(arr.max()) > np.iinfo(self.dtype).max:  # never wrap ids silently
            raise CodecompleteError(f"token id {int(arr.max())} does not fit {self.dtype}; the tokenizer and shard format disagree")
        arr.astype(self.dtype).tofile(self.fh)
        self.in_shard += arr.size
        self.stats.shards[-1]["tokens"] = self.in_shard
        self.stats.documents += new_document
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
    if cfg.val_files is not None:
        split_by, val_groups = "file", set(cfg.val_files) & files
    else:
        val_groups = choose_val_groups(repos if split_by == "repo" else files, cfg.val_fraction)

    # Pass 2: encode and append each document to its split.
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # only our own shard names: a half-finished earlier run, or --overwrite
        for old in out.glob(f"{split}_*.bin"):
            old.unlink()
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {s: _ShardWriter(out, s, dtype, cfg.shard_tokens) for s in SPLITS}
    train_lines: set[int] = set()  # for the copy index: lines of training files
    contexts = split_contexts(corpus, cfg, tokenizer, lambda d: "val" if group_key(d, split_by) in val_groups else "train")
    examples = 0
    batches = _batches(iter_documents(corpus, cfg.text_column), cfg.batch_docs)
    try:
        with _encoder(_Job(tokenizer, cfg, split_by, val_groups, contexts), cfg.workers if contexts else 1) as encode:
            for encoded in encode(batches):
                for e in encoded:
                    examples += len(e.pieces) if e.example else 0
                    for i, piece in enumerate(e.pieces):  # a file counted once, with its first piece
                        writers[e.split].write(piece, e.n_bytes if i == 0 else 0, i == 0)
                    train_lines.update(e.lines)
                if on_docs:
                    on_docs(len(encoded))
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
        "repo_context": {"share": cfg.repo_context, "examples": examples, "chunk_tokens": cfg.repo_chunk_tokens,
                         "snippet_tokens": cfg.repo_snippet_tokens} if cfg.repo_context > 0 else None,
        "copy_index": {"file": INDEX_FILE, "window": WINDOW, "stride": STRIDE, "min_line_chars": MIN_LINE_CHARS,
                       "windows": len(index.windows), "lines": len(index.lines)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@dataclass(frozen=True)
class _Job:
    """What encoding a document needs; a forked worker inherits it instead of receiving it."""

    tokenizer: Tokenizer
    cfg: PrepareConfig
    split_by: str
    val_groups: set[str]
    contexts: dict[tuple[str, str], RepoContext]


@dataclass(frozen=True)
class _Encoded:
    split: str
    pieces: list[np.ndarray]  # token ids, each followed by end-of-text
    n_bytes: int
    example: bool  # written as repository-level examples
    lines: list[int]  # line hashes of a training file, for the copy index


def _encode(job: _Job, batch: list[Document]) -> list[_Encoded]:
    tok, cfg, out = job.tokenizer, job.cfg, []
    splits = ["val" if group_key(doc, job.split_by) in job.val_groups else "train" for doc in batch]
    contexts = [job.contexts.get((doc.repo, split)) for doc, split in zip(batch, splits)]
    examples = [c is not None and _hash(f"repo-context:{d.repo}/{d.path}") / 2**64 < cfg.repo_context for d, c in zip(batch, contexts)]
    # A file written as repository-level examples is tokenized chunk by chunk, so not whole as well.
    whole = iter(tok.encode_batch([d.text for d, example in zip(batch, examples) if not example]))
    for doc, split, context, example in zip(batch, splits, contexts, examples):
        pieces = repo_examples(doc, context, tok, cfg) if example else [next(whole)]
        out.append(_Encoded(split, [np.asarray([*p, tok.eot_id], dtype=np.int64) for p in pieces], len(doc.text.encode("utf-8")),
                            example, line_hashes(doc.text) if split == "train" else []))
    return out


_JOB: _Job | None = None  # the job of a forked worker


def _encode_in_worker(batch: list[Document]) -> list[_Encoded]:
    assert _JOB is not None
    return _encode(_JOB, batch)


@contextmanager
def _encoder(job: _Job, workers: int) -> Iterator[Callable[[Iterator[list[Document]]], Iterator[list[_Encoded]]]]:
    """Encode batches in order, in this process or in forked workers (the repositories' indexes,
    built once here, are shared with them copy-on-write; without fork, as on Windows, one process)."""
    global _JOB
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        yield lambda batches: (_encode(job, b) for b in batches)
        return
    # The tokenizer's thread pool does not survive a fork: a worker that used it would hang (it
    # does, with TOKENIZERS_PARALLELISM=true). Workers tokenize on their own thread.
    _JOB, parallelism = job, os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with mp.get_context("fork").Pool(workers) as pool:

            def in_order(batches: Iterator[list[Document]]) -> Iterator[list[_Encoded]]:
                pending: deque[AsyncResult] = deque()  # bounded, unlike Pool.imap, which reads every batch ahead
                for batch in batches:
                    pending.append(pool.apply_async(_encode_in_worker, (batch,)))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().get()
                while pending:
                    yield pending.popleft().get()

            yield in_order
    finally:
        _JOB = None
        if parallelism is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallelism


def split_contexts(corpus: Path, cfg: PrepareConfig, tokenizer: Tokenizer, split_of: Callable[[Document], str]
                  ) -> dict[tuple[str, str], RepoContext]:
    """(repository, split) -> its files' context, for repository-level examples: a snippet never
    comes from the other split."""
    if cfg.repo_context <= 0:
        return {}
    if "file_sep" not in tokenizer.special_ids:
        raise CodecompleteError("--repo-context needs a tokenizer with a file separator token (ours have "
                                "<|file_separator|>); pass --repo-context 0 for this one")
    contexts: dict[tuple[str, str], RepoContext] = {}
    config = RepoContextConfig(project_ngrams=False)
    for doc in iter_documents(corpus, cfg.text_column):
        if not doc.repo or not doc.path:
            raise CodecompleteError(f"--repo-context needs repo and path columns in {corpus}; `collect` and `scrape` write both")
        contexts.setdefault((doc.repo, split_of(doc)), RepoContext(tokenizer, config)).set_file(doc.path, doc.text)
    for context in contexts.values():
        context.build()
    return contexts


def repo_examples(doc: Document, context: RepoContext, tokenizer: Tokenizer, cfg: PrepareConfig) -> list[list[int]]:
    """The file in chunks of whole lines, each behind the snippets its first lines retrieve."""
    sep = tokenizer.special_ids["file_sep"]
    out = []
    for chunk in line_chunks(tokenizer, doc.text, cfg.repo_chunk_tokens):
        # The engine queries with the lines before the cursor: here, the chunk's first lines.
        snippets = context.retrieve(doc.path, "".join(chunk.splitlines(True)[: context.config.query]))
        head = snippet_ids(tokenizer, snippets, cfg.repo_snippet_tokens, file_sep=True)
        out.append([*head, sep, *tokenizer.encode(chunk)] if head else tokenizer.encode(chunk))
    return out


def line_chunks(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[str]:
    """text cut at line starts into pieces of about max_tokens tokens at most (a longer line alone)."""
    ids, offsets = tokenizer.encode_with_offsets(text)
    if len(ids) <= max_tokens:
        return [text]
    token_starts = np.asarray([a for a, _ in offsets])
    chunks, start, budget_end = [], 0, max_tokens
    while budget_end < len(ids):
        cut = text.rfind("\n", start, int(token_starts[budget_end])) + 1  # the last line start within budget
        if cut <= start:
            cut = text.find("\n", int(token_starts[budget_end])) + 1 or len(text)  # one long line
        chunks.append(text[start:cut])
        start = cut
        budget_end = int(np.searchsorted(token_starts, start)) + max_tokens
    if start < len(text):
        chunks.append(text[start:])
    return chunks


def read_meta(data: Path) -> dict:
    path = data / "meta.json"
    if not path.is_file():
        raise CodecompleteError(f"{data} holds no meta.json; run `codecomplete-train prepare CORPUS --out {data}` first")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CodecompleteError(f"{path} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}; run prepare again")
    return meta
