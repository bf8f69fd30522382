"""Evaluation: metric definitions, case sampling, the n-gram baseline, the copy index, the commands."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codecomplete.engine.copy_index import MIN_LINE_CHARS, STRIDE, WINDOW, CopyIndex, line_hashes
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.evaluate import EvalConfig, body_cases, evaluate, line_cases, parses, split_documents
from codecomplete.train.metrics import edit_similarity, exact_match, is_degenerate, lcs_length
from codecomplete.train.ngram import NgramCompleter, NgramConfig, NgramModel
from tests.conftest import synthetic_module


# -- metrics ---------------------------------------------------------------------------------
def test_exact_match_compares_whitespace_separated_tokens() -> None:
    assert exact_match("return x + 1", "return x + 1")
    assert exact_match("return  x + 1 ", "return x + 1")
    assert not exact_match("return x+1", "return x + 1")
    assert not exact_match("", "x")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("abcd", "abce", 0.75),  # one substitution: LCS 3, 2*3/8
        ("abc", "abcd", 6 / 7),  # one insertion
        ("kitten", "sitting", 8 / 13),  # python-Levenshtein's ratio, as fuzz.ratio reports it
        ("", "", 1.0),
        ("abc", "", 0.0),
        ("  x = 1  ", "x = 1", 1.0),  # stripped, as CodeXGLUE strips
    ],
)
def test_edit_similarity_definition(a: str, b: str, expected: float) -> None:
    assert edit_similarity(a, b) == pytest.approx(expected)


def brute_lcs(a: str, b: str) -> int:
    if not a or not b:
        return 0
    if a[0] == b[0]:
        return 1 + brute_lcs(a[1:], b[1:])
    return max(brute_lcs(a[1:], b), brute_lcs(a, b[1:]))


@given(st.text("ab(): ", max_size=8), st.text("ab(): ", max_size=8))
def test_lcs_matches_brute_force_and_similarity_is_symmetric(a: str, b: str) -> None:
    assert lcs_length(a, b) == brute_lcs(a, b)
    assert edit_similarity(a, b) == pytest.approx(edit_similarity(b, a))
    assert 0.0 <= edit_similarity(a, b) <= 1.0
    assert (edit_similarity(a, b) == 1.0) == (a.strip() == b.strip())


def test_degenerate_completions_are_loops_not_ordinary_code() -> None:
    assert is_degenerate("return\nreturn\nreturn\nreturn")
    assert is_degenerate("self.x = self.x = self.x = self.x")
    assert not is_degenerate("x = compute(a, b)\nreturn x")


# -- cases -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docs() -> list[str]:
    rng = random.Random(7)
    return [synthetic_module(rng) for _ in range(12)]


def test_line_cases_are_deterministic_by_seed_and_cut_real_lines(prepared: dict[str, Path], docs: list[str]) -> None:
    tok = Tokenizer.from_file(prepared["tokenizer"])
    a, b, c = line_cases(docs, tok, 30, seed=1), line_cases(docs, tok, 30, seed=1), line_cases(docs, tok, 30, seed=2)
    assert a == b and a != c
    assert {case.kind for case in a} == {"mid", "start"}
    for case in a:
        doc = next(d for d in docs if d.startswith(case.prefix) and d[len(case.prefix):].startswith(case.target))
        assert case.target and "\n" not in case.target
        assert doc[len(case.prefix) + len(case.target):].lstrip(" \t").startswith("\n") or not doc[len(case.prefix) + len(case.target):].strip()
        assert case.suffix == doc[len(case.prefix) + len(case.target):].lstrip(" \t") or case.suffix.startswith("\n")
        assert case.prefix.endswith(case.line_prefix) and "\n" not in case.line_prefix
        if case.kind == "start":
            assert not case.line_prefix.strip() and case.prefix_tokens == 0
        else:
            assert case.line_prefix.strip() and case.prefix_tokens > 0


def test_body_cases_end_where_the_body_starts_and_the_answer_parses(docs: list[str]) -> None:
    cases = body_cases(docs, 5, seed=3)
    assert len(cases) == 5 and cases == body_cases(docs, 5, seed=3)
    for case in cases:
        assert case.header.lstrip().startswith("def ")
        assert parses(case, case.target + "\n")
        assert not parses(case, "if (:\n")


# -- the n-gram baseline ---------------------------------------------------------------------
class RandomCompleter:
    """Chance: tokens drawn uniformly from the vocabulary."""

    def __init__(self, tok: Tokenizer) -> None:
        from codecomplete.engine.completion import EngineStats

        self.tokenizer, self.stats, self.rng = tok, EngineStats(), random.Random(0)

    def clear_cache(self) -> None:
        pass

    def complete(self, prefix: str, suffix: str = "", n: int = 3, **_: object) -> list:
        from codecomplete.engine.completion import Candidate

        return [Candidate(self.tokenizer.decode([self.rng.randrange(5, self.tokenizer.vocab_size) for _ in range(4)]).split("\n")[0], -1.0)
                for _ in range(n)]


@pytest.fixture(scope="module")
def baseline(prepared: dict[str, Path]) -> NgramModel:
    from codecomplete.train.eval_cli import train_ids

    tok = Tokenizer.from_file(prepared["tokenizer"])
    return NgramModel.train(train_ids(prepared["data"]), tok, NgramConfig(order=4))


def test_baseline_beats_chance_on_held_out_code(prepared: dict[str, Path], baseline: NgramModel) -> None:
    tok = baseline.tokenizer
    held_out = split_documents(prepared["data"], "val", tok)
    cfg = EvalConfig(line_cases=40, body_cases=0, n=3)
    line, _, records = evaluate({"baseline": NgramCompleter(baseline), "chance": RandomCompleter(tok)}, held_out, tok, cfg)
    assert line["baseline"]["cases"] == line["chance"]["cases"] == 40
    assert line["baseline"]["exact_match"] >= 0.2 > line["chance"]["exact_match"]
    assert line["baseline"]["edit_similarity"] > line["chance"]["edit_similarity"] + 0.2
    assert len(records["line"]) == 40 and {"baseline", "chance"} <= set(records["line"][0])


def test_baseline_counts_and_backs_off(prepared: dict[str, Path], baseline: NgramModel) -> None:
    from codecomplete.train.eval_cli import train_ids
    from codecomplete.train.ngram import BACKOFF

    tok = baseline.tokenizer
    ids = tok.encode("    for i in range(")
    ranked = baseline.next_tokens(ids)
    assert ranked and all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))
    fim_middle = tok.special_ids["fim_middle"]  # never in the shards: FIM happens at training time
    unseen = baseline.next_tokens([fim_middle] * 3)  # so the context backs off to unigram counts
    counts = np.bincount(train_ids(prepared["data"]))
    assert unseen[0][0] == int(counts.argmax())
    assert unseen[0][1] == pytest.approx(math.log(counts.max() / counts.sum()) + 3 * math.log(BACKOFF))


def test_baseline_mixes_in_the_prompt_n_grams_like_the_engine(baseline: NgramModel) -> None:
    prefix = "zq_total = zq_combine(zq_left, zq_right)\nprint(zq_total)\nother = zq_combine("
    alone = NgramCompleter(baseline, context_weight=0.0).complete(prefix, n=1)
    mixed = NgramCompleter(baseline, context_weight=0.5).complete(prefix, n=1)
    assert not alone or not alone[0].text.startswith("zq_left, zq_right)")  # names the training data never had
    assert mixed[0].text.startswith("zq_left, zq_right)")


def test_baseline_saved_and_loaded_answers_the_same(tmp_path: Path, baseline: NgramModel) -> None:
    baseline.save(tmp_path / "ngram", "data")
    again = NgramCompleter.from_path(tmp_path / "ngram")
    prefix = "import json\n\n\ndef read_json_1(path, items=None):\n    items = "
    assert again.complete(prefix, n=3) == NgramCompleter(baseline).complete(prefix, n=3)
    assert again.complete(prefix, n=3)  # and it has something to say


# -- the copy index --------------------------------------------------------------------------
def test_copy_index_finds_a_planted_copy_and_misses_a_non_copy(prepared: dict[str, Path]) -> None:
    tok = Tokenizer.from_file(prepared["tokenizer"])
    rng = np.random.default_rng(0)
    train = [rng.integers(5, tok.vocab_size, size=400) for _ in range(3)]
    index = CopyIndex.build(train, [])
    for start in (0, 5, 123, 400 - WINDOW - STRIDE + 1):
        assert index.copied_tokens(train[1][start : start + WINDOW + STRIDE - 1].tolist())  # guaranteed length
    other = rng.integers(5, tok.vocab_size, size=200)
    assert not index.copied_tokens(other.tolist())
    assert not index.copied_tokens(train[1][:WINDOW - 1].tolist())  # too short to count


def test_copy_index_lines_count_only_long_lines_the_completion_wrote() -> None:
    line = "    result = compute_the_total(items, weights, offset=3)"
    assert len(line.strip()) >= MIN_LINE_CHARS
    index = CopyIndex(np.empty(0, np.uint64), np.array(line_hashes(f"x = 1\n{line}\nreturn result\n"), dtype=np.uint64))
    assert index.copied_lines("    ", line.strip(), "")  # the completion wrote the whole line
    assert index.copied_lines("    result = ", "compute_the_total(items, weights, offset=3)", "")  # most of it
    assert not index.copied_lines("    result = compute_the_total(items, weights, ", "offset=3)", "")  # the user typed most
    assert not index.copied_lines("    ", "result = compute_the_total(items, weights, offset=4)", "")
    assert not CopyIndex(np.empty(0, np.uint64), np.array(line_hashes("return x\n"), dtype=np.uint64)).copied_lines("", "return x", "")


def test_prepare_writes_a_copy_index_of_the_training_split_only(prepared: dict[str, Path]) -> None:
    data = prepared["data"]
    meta = json.loads((data / "meta.json").read_text())
    index = CopyIndex.load(data)
    assert meta["copy_index"]["windows"] == len(index.windows) > 0
    tok = Tokenizer.from_file(data / "tokenizer.json")
    train_docs, val_docs = split_documents(data, "train", tok), split_documents(data, "val", tok)
    copied = train_docs[0][:2000]
    assert index.copied(tok.encode(copied)[5:], "", copied, "") or index.copied_lines("", copied, "")
    val_only = [d for d in val_docs if not any(d[:600] in t for t in train_docs)]
    assert val_only and not index.copied_tokens(tok.encode(val_only[0])[:WINDOW + STRIDE])


def test_copy_index_load_errors_are_one_line(tmp_path: Path) -> None:
    from codecomplete.engine.errors import CodecompleteError

    bad = tmp_path / "copy_index.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CodecompleteError, match="prepare"):
        CopyIndex.load(tmp_path)


# -- the commands ----------------------------------------------------------------------------
def test_baseline_eval_and_report_commands(tmp_path: Path, prepared: dict[str, Path]) -> None:
    from codecomplete.engine.completion import CONTEXT_WEIGHT
    from tests.test_cli import cli, invoke

    data, run = prepared["data"], tmp_path / "run"
    invoke("train", data, "--out", run, "--preset", "tiny", "--max-steps", 6, "--eval-every", 3, "--block-size", 64, "--batch-size", 2,
           "--eval-tokens", 128, "--device", "cpu")
    invoke("baseline", data, "--out", tmp_path / "ngram")
    out = invoke("eval", run / "best", "--data", data, "--baseline", tmp_path / "ngram", "--line-cases", 12, "--body-cases", 3, "--lm-tokens", 256)
    assert "exact match" in out and "baseline" in out
    doc = json.loads((run / "eval.json").read_text())
    for block in ("line", "body"):
        assert set(doc[block]) == {"model", "baseline"}
    assert doc["line"]["model"]["cases"] == doc["line"]["baseline"]["cases"] == 12
    assert doc["line"]["model"]["mid"]["cases"] + doc["line"]["model"]["start"]["cases"] == 12
    assert doc["lm"]["bits_per_byte"] > 0 and 0 <= doc["lm"]["next_token_accuracy"] <= 1
    assert doc["source"] == {"data": str(data), "split": "val", "documents": doc["source"]["documents"], "copy_index": True}
    assert len(doc["cases"]["line"]) == 12 and all(c["model"]["latency_ms"] > 0 for c in doc["cases"]["line"])
    assert doc["config"]["model_context_weight"] == doc["config"]["baseline_context_weight"] == CONTEXT_WEIGHT

    # a prompt n-gram weight to try, for the model only; a bad one is refused before any work
    invoke("eval", run / "best", "--data", data, "--no-baseline", "--context-weight", 0.1, "--line-cases", 4, "--body-cases", 0,
           "--lm-tokens", 256, "--out", tmp_path / "tuned.json")
    assert json.loads((tmp_path / "tuned.json").read_text())["config"]["model_context_weight"] == 0.1
    bad = cli("eval", run / "best", "--data", data, "--context-weight", 1.5)
    assert bad.returncode != 0 and "--context-weight" in bad.stderr and "Traceback" not in bad.stderr

    # the n-gram folder evaluates like a checkpoint; another corpus evaluates without --data
    invoke("eval", tmp_path / "ngram", "--no-baseline", "--corpus", prepared["corpus"], "--line-cases", 6, "--body-cases", 0,
           "--out", tmp_path / "ngram_eval.json")
    assert json.loads((tmp_path / "ngram_eval.json").read_text())["line"]["model"]["cases"] == 6

    invoke("report", run)
    report = (run / "report.md").read_text()
    assert "validation loss" in report and "| exact match |" in report and "baseline" in report
    for png in ("loss.png", "exact_match_by_prefix.png", "latency.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
