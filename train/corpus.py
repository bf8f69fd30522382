"""Read a corpus: our own collect shards or any Parquet dataset with a text column.

Rows are streamed a batch at a time, reading only the columns needed, so a corpus larger than
memory reads fine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codecomplete.engine.errors import CodecompleteError

TEXT_COLUMNS = ("content", "text", "code")
# Public code datasets name these differently: ours and codeparrot use repo/repo_name + path,
# The Stack uses max_stars_repo_name / max_stars_repo_path.
REPO_COLUMNS = ("repo", "repo_name", "max_stars_repo_name")
PATH_COLUMNS = ("path", "max_stars_repo_path")


@dataclass(frozen=True)
class Document:
    text: str
    group: str  # what the train/validation split groups by: repo, else path, else row ordinal
    repo: str  # "" when the dataset has no repo column
    path: str  # "" when the dataset has no path column


def parquet_files(path: Path) -> list[Path]:
    """`path` itself if it is a file, else every `*.parquet` below it in path order."""
    if not path.exists():
        raise CodecompleteError(f"{path} does not exist; pass a .parquet file or a folder of them")
    if path.is_file():
        return [path]
    # Hidden folders hold caches and collect's staging area, never corpus files.
    files = [
        p
        for p in path.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    if not files:
        raise CodecompleteError(
            f"no .parquet files under {path}; collect a corpus there first or pass a Parquet dataset"
        )
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def find_text_column(schema: pa.Schema, requested: str | None, source: str = "the dataset") -> str:
    """The column holding the documents: `requested`, else the first of TEXT_COLUMNS present."""
    strings = [f.name for f in schema if _is_string(f.type)]
    if requested is not None:
        if requested in strings:
            return requested
        problem = "is not a string column" if requested in schema.names else "is not a column"
        raise CodecompleteError(
            f"{requested!r} {problem} of {source} (string columns: {', '.join(strings) or 'none'}); "
            "pass one of them to --text-column"
        )
    for name in TEXT_COLUMNS:
        if name in strings:
            return name
    raise CodecompleteError(
        f"no text column in {source} (columns: {', '.join(schema.names)}); pass --text-column NAME"
    )


def iter_documents(
    path: Path, text_column: str | None = None, batch_rows: int = 1024
) -> Iterator[Document]:
    """Every non-empty text in the corpus at `path`, file by file, in row order."""
    ordinal = 0  # across all files, so the last-resort group is unique per row
    for file in parquet_files(path):
        with _open(file) as pf:
            schema = pf.schema_arrow
            text_col = find_text_column(schema, text_column, source=str(file))
            repo_col = _first_string_column(schema, REPO_COLUMNS)
            path_col = _first_string_column(schema, PATH_COLUMNS)
            columns = [c for c in dict.fromkeys((text_col, repo_col, path_col)) if c]
            for batch in _batches(pf, file, columns, batch_rows):
                yield from _documents(batch, text_col, repo_col, path_col, ordinal)
                ordinal += batch.num_rows


def count_documents(path: Path) -> int:
    """Rows in the corpus, from Parquet footers only (empty texts included): a progress total."""
    total = 0
    for file in parquet_files(path):
        with _open(file) as pf:
            total += pf.metadata.num_rows
    return total


def _documents(
    batch: pa.RecordBatch,
    text_col: str,
    repo_col: str | None,
    path_col: str | None,
    first_ordinal: int,
) -> Iterator[Document]:
    texts = batch.column(text_col).to_pylist()
    repos = _strings(batch, repo_col)
    paths = _strings(batch, path_col)
    for i, text in enumerate(texts):
        if not text:
            continue
        repo, file_path = repos[i] or "", paths[i] or ""
        yield Document(text, repo or file_path or str(first_ordinal + i), repo, file_path)


def _strings(batch: pa.RecordBatch, column: str | None) -> list[str | None]:
    if column is None:
        return [None] * batch.num_rows
    return batch.column(column).to_pylist()


def _is_string(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _first_string_column(schema: pa.Schema, names: tuple[str, ...]) -> str | None:
    strings = {f.name for f in schema if _is_string(f.type)}
    return next((name for name in names if name in strings), None)


def _open(file: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(file, e) from e


def _batches(
    pf: pq.ParquetFile, file: Path, columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    # The try covers pyarrow's read alone, so a bug of ours is never reported as a corrupt file.
    batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(file, e) from e
        yield batch


def _unreadable(file: Path, error: Exception) -> CodecompleteError:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return CodecompleteError(
        f"{file} is not a readable Parquet file ({detail}); re-create it or remove it"
    )
