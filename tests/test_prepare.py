from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.corpus import iter_documents
from codecomplete.train.data import FimTokens, TokenShards, apply_fim, batch_rng, fim_permute
from codecomplete.train.prepare import PrepareConfig, choose_val_groups, prepare, read_meta


def split_documents(data: Path, split: str, tok: Tokenizer) -> list[str]:
    meta = read_meta(data)
    ids = np.concatenate([np.fromfile(data / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]])
    docs, start = [], 0
    for end in np.flatnonzero(ids == tok.eot_id):
        docs.append(tok.decode(ids[start:end].tolist()))
        start = end + 1
    assert start == len(ids), "every document ends with end-of-text"
    return docs


def test_every_file_lands_in_exactly_one_split_byte_for_byte(prepared: dict[str, Path]) -> None:
    tok = Tokenizer.from_file(prepared["tokenizer"])
    train, val = split_documents(prepared["data"], "train", tok), split_documents(prepared["data"], "val", tok)
    corpus = [d.text for d in iter_documents(prepared["corpus"])]
    assert val and train
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(corpus)


def test_meta_counts_match_the_shards(prepared: dict[str, Path]) -> None:
    meta = read_meta(prepared["data"])
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 512
    for stats in meta["splits"].values():
        on_disk = sum((prepared["data"] / s["file"]).stat().st_size for s in stats["shards"]) // 2
        assert on_disk == stats["tokens"] > 0
        assert stats["bytes"] > stats["tokens"]  # BPE packs more than one byte into a token
    assert (prepared["data"] / "tokenizer.json").read_text() == prepared["tokenizer"].read_text()


def test_split_by_repository_keeps_each_repo_on_one_side(tmp_path: Path, prepared: dict[str, Path]) -> None:
    rows = [{"repo": f"org/r{i % 30}", "path": f"m{i}.py", "content": f"x_{i} = {i}\n" * 5} for i in range(120)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ds.parquet")
    meta = prepare(tmp_path / "ds.parquet", prepared["tokenizer"], tmp_path / "out", PrepareConfig(val_fraction=0.2))
    assert meta["split_by"] == "repo"  # 30 repos: enough for a by-repository split
    tok = Tokenizer.from_file(prepared["tokenizer"])
    repo_of = {r["content"]: r["repo"] for r in rows}
    train = {repo_of[t] for t in split_documents(tmp_path / "out", "train", tok)}
    val = {repo_of[t] for t in split_documents(tmp_path / "out", "val", tok)}
    assert not train & val and len(val) == 6 and len(train | val) == 30


def test_any_parquet_dataset_with_a_text_column(tmp_path: Path, prepared: dict[str, Path]) -> None:
    pq.write_table(pa.table({"text": [f"print({i})\n" for i in range(10)], "n": list(range(10))}), tmp_path / "t.parquet")
    meta = prepare(tmp_path / "t.parquet", prepared["tokenizer"], tmp_path / "out", PrepareConfig(val_fraction=0.3))
    assert meta["split_by"] == "file"
    assert meta["splits"]["val"]["documents"] == 3 and meta["splits"]["train"]["documents"] == 7


def test_val_groups_are_stable_and_never_empty_or_everything() -> None:
    keys = {f"k{i}" for i in range(10)}
    assert choose_val_groups(keys, 0.2) == choose_val_groups(set(sorted(keys, reverse=True)), 0.2)
    assert len(choose_val_groups(keys, 0.001)) == 1
    assert len(choose_val_groups(keys, 0.999)) == 9
    with pytest.raises(CodecompleteError, match="at least 2"):
        choose_val_groups({"only"}, 0.5)


def test_refuses_to_overwrite_prepared_data(prepared: dict[str, Path]) -> None:
    with pytest.raises(CodecompleteError, match="--overwrite"):
        prepare(prepared["corpus"], prepared["tokenizer"], prepared["data"], PrepareConfig())


def test_read_meta_of_an_unprepared_folder_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="codecomplete-train prepare"):
        read_meta(tmp_path)


FIM = FimTokens(prefix=1, suffix=2, middle=3, eot=0)


def test_fim_permute_is_suffix_prefix_middle_of_the_same_tokens() -> None:
    rng = np.random.default_rng(0)
    doc = np.arange(10, 40)
    for _ in range(50):
        out = fim_permute(doc, rng, FIM)
        assert out[0] == FIM.prefix and out[1] == FIM.suffix
        mid = int(np.flatnonzero(out == FIM.middle)[0])
        suffix, prefix_middle = out[2:mid], out[mid + 1 :]
        assert np.array_equal(np.concatenate([prefix_middle, suffix]), doc)


def test_apply_fim_keeps_length_and_document_boundaries() -> None:
    rng = np.random.default_rng(1)
    window = np.array([10, 11, 12, 13, 0, 20, 21, 22, 23, 24, 0, 30, 31], dtype=np.int64)
    assert np.array_equal(apply_fim(window, rng, 0.0, FIM), window)
    out = apply_fim(window, rng, 1.0, FIM)
    assert len(out) == len(window)
    assert out[0] == FIM.prefix and FIM.eot in out


def test_batches_depend_only_on_seed_and_step(prepared: dict[str, Path]) -> None:
    shards = TokenShards(prepared["data"], "train")
    a = shards.random_batch(batch_rng(7, 3), 4, 32, 0.5, FIM)
    b = shards.random_batch(batch_rng(7, 3), 4, 32, 0.5, FIM)
    c = shards.random_batch(batch_rng(7, 4), 4, 32, 0.5, FIM)
    assert all(x.equal(y) for x, y in zip(a, b))
    assert not a[0].equal(c[0])
    x, y = a
    assert x.shape == y.shape == (4, 32) and x[:, 1:].equal(y[:, :-1])


def test_eval_windows_do_not_overlap(prepared: dict[str, Path]) -> None:
    shards = TokenShards(prepared["data"], "val")
    spans = shards.eval_windows(16, 10_000)
    assert spans and len(set(spans)) == len(spans)
    for (s1, o1), (s2, o2) in zip(spans, spans[1:]):
        assert s1 < s2 or o2 - o1 >= 16
    assert all(o + 17 <= len(shards.arrays[s]) for s, o in spans)
    with pytest.raises(CodecompleteError, match="too few"):
        shards.check_fits(10**7)


def test_meta_is_plain_json(prepared: dict[str, Path]) -> None:
    meta = json.loads((prepared["data"] / "meta.json").read_text())
    assert set(meta["special_ids"]) == {"eot", "file_sep", "fim_prefix", "fim_suffix", "fim_middle"}


# -- repository-level examples -------------------------------------------------------------------
def repo_rows() -> list[dict[str, str]]:
    """Two repositories of helper/user pairs: each user file calls its repository's helper."""
    rows = []
    for r in range(2):
        for i in range(4):
            name = f"load_record_{r}_{i}"
            rows.append({"repo": f"org/r{r}", "path": f"helpers{i}.py",
                         "content": f"def {name}(path, strict):\n    with open(path) as f:\n        return parse(f, strict)\n" * 3})
            rows.append({"repo": f"org/r{r}", "path": f"user{i}.py",
                         "content": f"import helpers{i}\n\nrecord = helpers{i}.{name}(path, strict)\n" * 3})
    return rows


def test_repository_level_examples_put_snippets_of_the_same_repo_and_split_in_front(tmp_path: Path,
                                                                                     prepared: dict[str, Path]) -> None:
    rows = repo_rows()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ds.parquet")
    cfg = PrepareConfig(val_fraction=0.25, split_by="file", repo_context=1.0, repo_chunk_tokens=40)
    meta = prepare(tmp_path / "ds.parquet", prepared["tokenizer"], tmp_path / "out", cfg)
    tok = Tokenizer.from_file(prepared["tokenizer"])
    sep = "<|file_separator|>"
    train, val = split_documents(tmp_path / "out", "train", tok), split_documents(tmp_path / "out", "val", tok)
    assert meta["repo_context"]["examples"] == len(train) + len(val) > len(rows)  # files cut into 40-token chunks
    val_files = choose_val_groups({f"{r['repo']}/{r['path']}" for r in rows}, 0.25)
    headed = [d for d in train if d.startswith(sep)]
    assert headed and all(d.count(sep) >= 2 for d in headed)  # snippet(s), then the file's chunk
    for doc in headed:
        *snippets, chunk = doc.split(sep)[1:]
        repo = "0" if "_0_" in doc else "1"
        for s in snippets:
            path, text = s.split("\n", 1)
            assert f"_{repo}_" in text and f"_{1 - int(repo)}_" not in text  # its own repository's
            assert f"org/r{repo}/{path}" not in val_files  # never a validation file
    assert {d.split(sep)[-1] for d in train} and all(sep not in d or d.startswith(sep) for d in train + val)


WORKERS = """
import sys
from pathlib import Path
from codecomplete.train.prepare import PrepareConfig, prepare
cfg = PrepareConfig(val_fraction=0.25, split_by="file", repo_context=0.5, repo_chunk_tokens=40, batch_docs=3, workers=3)
prepare(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), cfg)
"""


def test_workers_write_what_one_process_writes(tmp_path: Path, prepared: dict[str, Path]) -> None:
    pq.write_table(pa.Table.from_pylist(repo_rows()), tmp_path / "ds.parquet")
    cfg = PrepareConfig(val_fraction=0.25, split_by="file", repo_context=0.5, repo_chunk_tokens=40, batch_docs=3)
    meta = prepare(tmp_path / "ds.parquet", prepared["tokenizer"], tmp_path / "one", cfg)
    assert meta["repo_context"]["examples"] > 0 and meta["splits"]["val"]["tokens"] > 0
    # Three forked workers, with the tokenizer's own threads asked for: they would hang a worker.
    subprocess.run([sys.executable, "-c", WORKERS, str(tmp_path / "ds.parquet"), str(prepared["tokenizer"]), str(tmp_path / "three")],
                   env={**os.environ, "TOKENIZERS_PARALLELISM": "true"}, check=True, timeout=120)
    read = lambda out: {f.name: f.read_bytes() for f in sorted(out.iterdir())}  # noqa: E731
    assert read(tmp_path / "three") == read(tmp_path / "one")  # shards, copy index and meta.json, byte for byte


def test_fill_in_the_middle_keeps_a_repository_level_head_in_front() -> None:
    t = FimTokens(prefix=90, suffix=91, middle=92, eot=0, file_sep=93)
    doc = np.array([93, 7, 7, 93, 1, 2, 3, 4, 5, 6])
    out = apply_fim(doc, np.random.default_rng(0), 1.0, t)
    assert out[:4].tolist() == [93, 7, 7, 93] and out[4:6].tolist() == [90, 91]  # head, then SPM
    assert len(out) == len(doc) and 92 in out[6:] and set(out[6:].tolist()) <= {1, 2, 3, 4, 5, 6, 92}


def test_repo_context_needs_repositories(tmp_path: Path, prepared: dict[str, Path]) -> None:
    pq.write_table(pa.Table.from_pylist([{"content": "x = 1\n" * 20}] * 4), tmp_path / "ds.parquet")
    with pytest.raises(CodecompleteError, match="repo and path columns"):
        prepare(tmp_path / "ds.parquet", prepared["tokenizer"], tmp_path / "out", PrepareConfig(repo_context=0.5))
