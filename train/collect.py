"""Walk folders of Python code and write a Parquet corpus: one row per kept file.

Shards are built in a staging folder inside `out` and moved into place only once the whole
collect succeeded, so a failed or interrupted run never leaves a half-replaced corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.ignores import IgnoreRules, skipped_dir
from codecomplete.train.filters import FilterConfig, is_test_path, reject_reason

SCHEMA = pa.schema(
    [
        ("repo", pa.string()),
        ("path", pa.string()),
        ("sha", pa.string()),
        ("license", pa.string()),
        ("stars", pa.int64()),
        ("size", pa.int64()),
        ("content", pa.string()),
    ]
)
SHARD_GLOB = "shard-*.parquet"
SUMMARY_NAME = "summary.json"
SKIPPED_DIR_NAMES = {"__pycache__"}
# Row groups bound memory while writing and are the unit readers stream; the byte cap also
# keeps each string column far below Arrow's 2 GiB-per-array offset limit.
ROW_GROUP_ROWS = 1024
ROW_GROUP_BYTES = 64 << 20


@dataclass
class CollectConfig:
    filters: FilterConfig = field(default_factory=FilterConfig)
    shard_rows: int = 20_000
    overwrite: bool = False
    follow_symlinks: bool = False
    project: bool = False  # also skip what a walk of a project skips (iter_python_files)


@dataclass
class CollectSummary:
    files_seen: int = 0
    files_kept: int = 0
    bytes_kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)  # file names inside the output folder

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, folder: Path) -> Path:
        path = folder / SUMMARY_NAME
        tmp = folder / f".{SUMMARY_NAME}.tmp"
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def git_blob_sha(data: bytes) -> str:
    """The id git gives this content (`git hash-object`), so rows can be matched to repos."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def iter_python_files(folder: Path, follow_symlinks: bool = False, project: bool = False) -> Iterator[Path]:
    """Every `*.py` file under `folder`, depth first in name order so runs are reproducible.

    project: also skip virtual environments, site-packages, build output and what .gitignore files
    ignore (engine/ignores.py), as the language server's workspace index does: `adapt`'s walk.
    """
    yield from _walk(folder, follow_symlinks, visited=set(), rules=IgnoreRules(folder) if project else None)


def _walk(directory: Path, follow_symlinks: bool, visited: set[str], rules: IgnoreRules | None) -> Iterator[Path]:
    # Real paths of walked folders: a symlink loop or alias is walked once, not forever.
    real = os.path.realpath(directory)
    if real in visited:
        return
    visited.add(real)
    if rules is not None:
        rules.add(directory)
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return  # a folder we may not list holds nothing we could read
    for entry in entries:
        # Without follow_symlinks, is_dir/is_file are False for a link, so links are skipped.
        try:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=follow_symlinks):
                if not (entry.name.startswith(".") or entry.name in SKIPPED_DIR_NAMES or _ignored(rules, path, True)):
                    yield from _walk(path, follow_symlinks, visited, rules)
            elif entry.name.endswith(".py") and entry.is_file(follow_symlinks=follow_symlinks) and not _ignored(rules, path, False):
                yield path
        except OSError:
            continue  # vanished or unstat-able mid-walk


def _ignored(rules: IgnoreRules | None, path: Path, is_dir: bool) -> bool:
    if rules is None:
        return False
    return (is_dir and skipped_dir(path, path.name)) or rules.ignored(path, is_dir)


def count_candidate_files(folders: list[Path], follow_symlinks: bool = False, project: bool = False) -> int:
    """How many files `collect` will look at: the total for a progress bar."""
    return sum(1 for folder in folders for _ in iter_python_files(folder, follow_symlinks, project))


def collect(
    folders: list[Path],
    out: Path,
    cfg: CollectConfig,
    on_file: Callable[[int], None] | None = None,
) -> CollectSummary:
    """Filter the `*.py` files under `folders` into Parquet shards in `out`; see CollectSummary.

    `on_file(n_bytes)` is called once per file looked at, kept or not.
    """
    _check_inputs(folders, out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".collect-", dir=out))
    try:
        summary = _collect_into(staging, folders, cfg, on_file)
        _publish(staging, out, summary.shards)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.write(out)
    return summary


def _check_inputs(folders: list[Path], out: Path, cfg: CollectConfig) -> None:
    if not folders:
        raise CodecompleteError("no folders given; pass at least one folder of Python code")
    for folder in folders:
        if not folder.exists():
            raise CodecompleteError(f"folder {folder} does not exist; pass a folder of Python code")
        if not folder.is_dir():
            raise CodecompleteError(f"{folder} is not a folder; pass the folder that holds it")
    if cfg.shard_rows < 1:
        raise CodecompleteError(f"shard_rows is {cfg.shard_rows}; it must be at least 1")
    if out.exists() and not out.is_dir():
        raise CodecompleteError(f"{out} is a file; choose a folder for --out")
    existing = list(out.glob(SHARD_GLOB)) if out.is_dir() else []
    if existing and not cfg.overwrite:
        raise CodecompleteError(
            f"{out} already holds {len(existing)} shards; choose another --out or pass --overwrite"
        )


def _collect_into(
    staging: Path,
    folders: list[Path],
    cfg: CollectConfig,
    on_file: Callable[[int], None] | None,
) -> CollectSummary:
    summary = CollectSummary()
    rejected: Counter[str] = Counter()
    seen_shas: set[str] = set()  # across all folders: the first copy of a file wins
    with _ShardWriter(staging, cfg.shard_rows) as writer:
        for folder in folders:
            repo = "local/" + folder.resolve().name
            seen_before = summary.files_seen
            for file in iter_python_files(folder, cfg.follow_symlinks, cfg.project):
                summary.files_seen += 1
                path = file.relative_to(folder).as_posix()
                if cfg.filters.drop_tests and is_test_path(path):
                    rejected["test_file"] += 1
                    _notify(on_file, 0)
                    continue
                try:
                    data, n_bytes = _read_capped(file, cfg.filters.max_bytes)
                except OSError:
                    rejected["unreadable"] += 1
                    _notify(on_file, 0)
                    continue
                reason, content, sha = judge(data, cfg.filters, seen_shas)
                if reason is None:
                    writer.add(row(repo, path, sha, len(data), content), len(data))
                    summary.files_kept += 1
                    summary.bytes_kept += len(data)
                else:
                    rejected[reason] += 1
                _notify(on_file, n_bytes)
            if summary.files_seen == seen_before:
                raise CodecompleteError(
                    f"no .py files under {folder}; point collect at a folder of Python code"
                )
    summary.rejected = dict(sorted(rejected.items()))
    summary.shards = writer.names
    if summary.files_kept == 0:
        raise CodecompleteError(_nothing_kept_message(summary.files_seen, rejected))
    return summary


def _notify(on_file: Callable[[int], None] | None, n_bytes: int) -> None:
    if on_file is not None:
        on_file(n_bytes)


def _read_capped(file: Path, max_bytes: int) -> tuple[bytes, int]:
    """(at most max_bytes + 1 bytes of the file, its full size)."""
    # One byte past the limit is enough to call a file too large without loading a
    # multi-gigabyte dump that happens to end in .py.
    with open(file, "rb") as f:
        return f.read(max_bytes + 1), os.fstat(f.fileno()).st_size


def judge(data: bytes, cfg: FilterConfig, seen_shas: set[str]) -> tuple[str | None, str, str]:
    """(reject reason or None, decoded content, blob sha); cheap byte checks run first."""
    if len(data) < cfg.min_bytes:
        return "too_small", "", ""
    if len(data) > cfg.max_bytes:
        return "too_large", "", ""
    if b"\0" in data:
        return "has_nul", "", ""
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", "", ""
    sha = git_blob_sha(data)
    if sha in seen_shas:
        return "duplicate", "", ""
    seen_shas.add(sha)
    return reject_reason(content, cfg), content, sha


def row(repo: str, path: str, sha: str, size: int, content: str) -> dict[str, object]:
    # Local folders carry no license or star metadata; "" and 0 mean unknown.
    return {
        "repo": repo,
        "path": path,
        "sha": sha,
        "license": "",
        "stars": 0,
        "size": size,
        "content": content,
    }


def _nothing_kept_message(files_seen: int, rejected: Counter[str]) -> str:
    top = rejected.most_common(3)
    reasons = ", ".join(f"{reason} {n}" for reason, n in top)
    fix = "pass --keep-tests to keep test files" if top[0][0] == "test_file" else "point collect at more code or loosen the filters"
    return f"none of the {files_seen} .py files passed the filters (rejected: {reasons}); {fix}"


def _publish(staging: Path, out: Path, names: list[str]) -> None:
    for name in names:
        os.replace(staging / name, out / name)
    # Only reachable with overwrite: shards numbered past the new count belong to the
    # corpus being replaced and would otherwise be read as part of this one.
    for stale in out.glob(SHARD_GLOB):
        if stale.name not in names:
            stale.unlink()


class _ShardWriter:
    """Streams rows into `shard-NNNNN.parquet` files of at most `shard_rows` rows each."""

    def __init__(self, folder: Path, shard_rows: int) -> None:
        self.folder = folder
        self.shard_rows = shard_rows
        self.names: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0
        self._buffer: list[dict[str, object]] = []
        self._buffer_bytes = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_shard()

    def add(self, row: dict[str, object], n_bytes: int) -> None:
        if self._writer is None:
            name = f"shard-{len(self.names):05d}.parquet"
            self._writer = pq.ParquetWriter(self.folder / name, SCHEMA, compression="zstd")
            self.names.append(name)
        self._buffer.append(row)
        self._buffer_bytes += n_bytes
        self._rows_in_shard += 1
        if self._rows_in_shard >= self.shard_rows:
            self._close_shard()
        elif len(self._buffer) >= ROW_GROUP_ROWS or self._buffer_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._writer is not None and self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=SCHEMA))
        self._buffer = []
        self._buffer_bytes = 0

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._rows_in_shard = 0
