"""corpus: read our own shards or any Parquet dataset with a text column."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.collect import CollectConfig, collect
from codecomplete.train.corpus import (
    Document,
    count_documents,
    find_text_column,
    iter_documents,
    parquet_files,
)


def write_parquet(path: Path, columns: dict[str, list[object]], **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def one_line_error(excinfo: pytest.ExceptionInfo[CodecompleteError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- finding files ------------------------------------------------------------------------


def test_parquet_files_single_file_and_sorted_recursive_folder(tmp_path: Path) -> None:
    for rel in ["b.parquet", "a/z.parquet", "a/b.parquet", ".cache/stale.parquet"]:
        write_parquet(tmp_path / "ds" / rel, {"text": ["x"]})
    (tmp_path / "ds" / "notes.txt").write_text("not parquet")
    single = tmp_path / "ds" / "b.parquet"
    assert parquet_files(single) == [single]
    assert [p.relative_to(tmp_path / "ds").as_posix() for p in parquet_files(tmp_path / "ds")] == [
        "a/b.parquet",
        "a/z.parquet",
        "b.parquet",
    ]


def test_parquet_files_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError) as excinfo:
        parquet_files(tmp_path / "missing")
    assert "missing does not exist" in one_line_error(excinfo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodecompleteError) as excinfo:
        parquet_files(tmp_path / "empty")
    assert f"no .parquet files under {tmp_path / 'empty'}" in one_line_error(excinfo)


# --- text column --------------------------------------------------------------------------


def test_find_text_column_prefers_content_then_text_then_code() -> None:
    schema = pa.schema([("code", pa.string()), ("text", pa.large_string()), ("id", pa.int64())])
    assert find_text_column(schema, None) == "text"
    assert find_text_column(schema.append(pa.field("content", pa.string())), None) == "content"
    assert find_text_column(schema, "code") == "code"


def test_find_text_column_skips_non_string_columns() -> None:
    schema = pa.schema([("content", pa.binary()), ("code", pa.string())])
    assert find_text_column(schema, None) == "code"


def test_wrong_text_column_lists_string_columns() -> None:
    schema = pa.schema([("body", pa.string()), ("title", pa.string()), ("n", pa.int64())])
    with pytest.raises(CodecompleteError) as excinfo:
        find_text_column(schema, "contents", source="data.parquet")
    message = one_line_error(excinfo)
    assert "'contents' is not a column of data.parquet" in message
    assert "string columns: body, title)" in message and "--text-column" in message
    with pytest.raises(CodecompleteError) as excinfo:
        find_text_column(schema, "n")
    assert "'n' is not a string column" in one_line_error(excinfo)


def test_no_text_column_lists_all_columns(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "data.parquet", {"body": ["x"], "n": [1]})
    with pytest.raises(CodecompleteError) as excinfo:
        list(iter_documents(data))
    message = one_line_error(excinfo)
    assert f"no text column in {data} (columns: body, n)" in message
    assert "--text-column NAME" in message


# --- documents ----------------------------------------------------------------------------


def test_generic_dataset_groups_by_path_then_ordinal(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_parquet(
        ds / "a.parquet", {"text": ["one", None, "", "four"], "path": ["p1", "", None, "p4"]}
    )
    write_parquet(ds / "b.parquet", {"text": ["five", "six"]})
    assert list(iter_documents(ds)) == [
        Document(text="one", group="p1", repo="", path="p1"),
        Document(text="four", group="p4", repo="", path="p4"),
        # No path column: the row's ordinal across the whole dataset, nulls and empties counted.
        Document(text="five", group="4", repo="", path=""),
        Document(text="six", group="5", repo="", path=""),
    ]
    assert count_documents(ds) == 6


def test_repo_groups_and_falls_back_per_row(tmp_path: Path) -> None:
    data = write_parquet(
        tmp_path / "d.parquet",
        {
            "content": ["a", "b", "c"],
            "repo_name": ["org/x", "", None],
            "path": ["x.py", "y.py", ""],
        },
    )
    assert [(d.group, d.repo, d.path) for d in iter_documents(data)] == [
        ("org/x", "org/x", "x.py"),
        ("y.py", "", "y.py"),
        ("2", "", ""),
    ]


def test_explicit_text_column_and_small_batches(tmp_path: Path) -> None:
    bodies = [f"body {i}" for i in range(7)]
    data = write_parquet(
        tmp_path / "d.parquet",
        {"text": ["ignored"] * 7, "body": bodies},
        row_group_size=3,
    )
    docs = list(iter_documents(data, text_column="body", batch_rows=2))
    assert [d.text for d in docs] == bodies
    assert [d.group for d in docs] == [str(i) for i in range(7)]


def test_requested_column_missing_in_one_file_names_that_file(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_parquet(ds / "a.parquet", {"body": ["x"]})
    bad = write_parquet(ds / "b.parquet", {"text": ["y"]})
    docs = iter_documents(ds, text_column="body")
    assert next(docs).text == "x"
    with pytest.raises(CodecompleteError) as excinfo:
        next(docs)
    assert f"of {bad} (string columns: text)" in one_line_error(excinfo)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_parquet_names_the_file(tmp_path: Path, damage: str) -> None:
    ds = tmp_path / "ds"
    write_parquet(ds / "a_good.parquet", {"text": ["fine"]})
    bad = write_parquet(ds / "b_bad.parquet", {"text": ["x" * 5000] * 10})
    raw = bad.read_bytes()
    bad.write_bytes(b"this is not parquet at all" if damage == "garbage" else raw[: len(raw) // 2])
    for read in (lambda: list(iter_documents(ds)), lambda: count_documents(ds)):
        with pytest.raises(CodecompleteError) as excinfo:
            read()
        message = one_line_error(excinfo)
        assert str(bad) in message and "not a readable Parquet file" in message


# --- collect -> corpus round trip ---------------------------------------------------------


def test_odd_unicode_survives_collect_byte_for_byte(tmp_path: Path) -> None:
    body = "".join(
        f"def f_{i}(x):\t# 函数 {i} 🐍 naïve café\r\n    return x + {i}  # ß ∑ 日本語\r\n\r\n"
        for i in range(40)
    )
    samples = {
        "crlf.py": body.encode(),
        "bom_tabs.py": ("\ufeff" + body.replace("\r\n", "\n").replace("    ", "\t")).encode(),
        "mixed.py": ("# 😀 emoji first\n" + body + "x = '\\r'\r\n\x0c\nlast = 1").encode(),
    }
    src = tmp_path / "ユニコード"
    for name, raw in samples.items():
        (src / "пакет").mkdir(parents=True, exist_ok=True)
        (src / "пакет" / name).write_bytes(raw)
    collect([src], tmp_path / "out", CollectConfig())
    docs = {d.path: d for d in iter_documents(tmp_path / "out")}
    assert set(docs) == {f"пакет/{name}" for name in samples}
    for name, raw in samples.items():
        doc = docs[f"пакет/{name}"]
        assert doc.text.encode("utf-8") == raw
        assert doc.group == doc.repo == "local/ユニコード"


def test_count_documents_matches_collect(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"m{i}.py").write_text(f"def m{i}():\n    return {i}\n" * 60)
    summary = collect([src], tmp_path / "out", CollectConfig(shard_rows=2))
    assert count_documents(tmp_path / "out") == summary.files_kept == 5
    assert len(list(iter_documents(tmp_path / "out"))) == 5
