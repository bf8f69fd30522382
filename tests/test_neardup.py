"""Near-duplicate removal (MinHash LSH) on any Parquet corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.cli import app
from codecomplete.train.collect import SCHEMA
from codecomplete.train.neardup import REPORT_NAME, MinHasher, NearDupConfig, dedupe_corpus, find_clusters

WORDS = ["alpha", "beta", "gamma", "delta", "path", "items", "count", "value", "result", "config", "index", "data", "key", "line", "total", "name"]


def module(seed: int, n_funcs: int = 12) -> str:
    """Python whose 5-gram shingles barely overlap with another seed's."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_funcs):
        a, b, c = (f"{rng.choice(WORDS)}_{rng.randint(0, 10**6)}" for _ in range(3))
        out += [f"def {a}({b}, {c}=None):", f"    {c} = {c} or {rng.randint(0, 999)}",
                f"    return {b} * {c} + {rng.randint(0, 10**6)}", ""]
    return "\n".join(out)


def edit_lines(text: str, every: int) -> str:
    """Change one line in `every`: every=40 is a small edit, every=2 rewrites half the file."""
    lines = text.splitlines()
    return "\n".join(f"{line}  # edited {i}" if i % every == 0 else line for i, line in enumerate(lines))


def write_corpus(folder: Path, texts: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"repo": "o/r", "path": p, "sha": str(i), "license": "MIT", "stars": 1, "size": len(t), "content": t}
            for i, (p, t) in enumerate(texts)]
    half = len(rows) // 2  # two shards: clusters span files
    pq.write_table(pa.Table.from_pylist(rows[:half], schema=SCHEMA), folder / "shard-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:], schema=SCHEMA), folder / "shard-00001.parquet")


def paths(folder: Path) -> list[str]:
    return [r["path"] for f in sorted(folder.glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_near_and_exact_duplicates_go_and_distinct_files_stay(tmp_path: Path) -> None:
    base = module(1)
    texts = [("base.py", base), ("other.py", module(2)), ("small_edit.py", edit_lines(base, 40)),
             ("rewritten.py", edit_lines(base, 2)), ("exact.py", base), ("third.py", module(3))]
    write_corpus(tmp_path / "in", texts)
    report = dedupe_corpus(tmp_path / "in", tmp_path / "out")
    assert paths(tmp_path / "out") == ["base.py", "other.py", "rewritten.py", "third.py"]
    assert (report.files_in, report.files_kept, report.clusters, report.removed) == (6, 4, 1, 2)
    on_disk = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert on_disk["examples"] == [{"kept": "o/r/base.py", "removed": ["o/r/small_edit.py", "o/r/exact.py"]}]
    assert pq.read_schema(tmp_path / "out" / "shard-00000.parquet").names == SCHEMA.names


def test_every_close_pair_is_found_and_no_distinct_pair_is_merged() -> None:
    # Pairs at Jaccard 0.93: four standard deviations of the 256-permutation estimate above
    # 0.85, so a miss means the banding or the estimate is wrong, not bad luck.
    cfg = NearDupConfig()
    hasher = MinHasher(cfg)
    texts = [t for seed in range(30) for t in (module(seed, 30), edit_lines(module(seed, 30), 40))]
    clusters = find_clusters(np.stack([hasher.signature(t) for t in texts]), cfg)
    assert clusters == [[2 * i, 2 * i + 1] for i in range(30)]


def test_any_parquet_with_a_text_column_keeps_its_columns_and_empty_rows(tmp_path: Path) -> None:
    base = module(7)
    table = pa.table({"text": [base, "", base, module(8)], "id": [10, 11, 12, 13]})
    pq.write_table(table, tmp_path / "data.parquet")
    report = dedupe_corpus(tmp_path / "data.parquet", tmp_path / "out")
    kept = pq.read_table(tmp_path / "out" / "data.parquet")
    assert kept.column("id").to_pylist() == [10, 11, 13]  # the empty row is not a document: kept
    assert report.removed == 1 and report.files_in == 3


def test_signatures_are_stable_across_processes_and_estimate_jaccard() -> None:
    cfg = NearDupConfig()
    text = module(5)
    a, b = MinHasher(cfg).signature(text), MinHasher(cfg).signature(text)
    assert a.dtype == np.uint32 and a.shape == (cfg.num_perm,) and np.array_equal(a, b)
    far = MinHasher(cfg).signature(module(6))
    assert np.mean(a == far) < 0.1


@pytest.mark.parametrize("out_name,threshold,match", [("in", 0.85, "the corpus itself"), ("out", 1.5, "not a Jaccard")])
def test_bad_arguments_are_one_line(tmp_path: Path, out_name: str, threshold: float, match: str) -> None:
    write_corpus(tmp_path / "in", [("a.py", module(1)), ("b.py", module(2))])
    with pytest.raises(CodecompleteError, match=match):
        dedupe_corpus(tmp_path / "in", tmp_path / out_name, NearDupConfig(threshold=threshold))


def test_an_occupied_out_folder_is_refused(tmp_path: Path) -> None:
    write_corpus(tmp_path / "in", [("a.py", module(1)), ("b.py", module(2))])
    write_corpus(tmp_path / "out", [("c.py", module(3)), ("d.py", module(4))])
    with pytest.raises(CodecompleteError, match="already holds Parquet files"):
        dedupe_corpus(tmp_path / "in", tmp_path / "out")


def test_cli_reports_clusters_removed(tmp_path: Path) -> None:
    base = module(1)
    write_corpus(tmp_path / "in", [("a.py", base), ("b.py", edit_lines(base, 40)), ("c.py", module(2)), ("d.py", module(3))])
    result = CliRunner().invoke(app, ["dedupe", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "removed 1 near-duplicates in 1 clusters" in result.output
    assert paths(tmp_path / "out") == ["a.py", "c.py", "d.py"]
