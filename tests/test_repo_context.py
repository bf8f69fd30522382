"""Repository context in the engine: the project's n-grams, retrieval, the prompt layout, and copying
a name that only another file of the project defines."""
from __future__ import annotations

import numpy as np
import pytest
from test_engine import code, random_model, tok  # noqa: F401  (module fixtures)

from codecomplete.engine.completion import CompletionEngine, project_caches
from codecomplete.engine.model import GPT
from codecomplete.engine.project_ngrams import ProjectCache, ProjectNgrams
from codecomplete.engine.prompt import build_prompt, snippet_ids
from codecomplete.engine.repo_context import RepoContext, RepoContextConfig
from codecomplete.engine.retrieval import (
    FileWindows,
    Snippet,
    SnippetIndex,
    Vocabulary,
    WindowShape,
    query_lines,
)
from codecomplete.engine.tokenizer import Tokenizer


# -- the project's n-grams ---------------------------------------------------------------------
def test_project_ngrams_find_the_longest_match_and_count_what_followed() -> None:
    ngrams = ProjectNgrams.build([("a.py", [5, 6, 7, 8, 5, 6, 7, 9]), ("b.py", [1, 6, 7, 8, 2])], vocab_size=20)
    assert ngrams.order == 64 // 5 and ngrams.tokens == 7 + 4  # every token with one after it
    assert ngrams.lookup([5, 6, 7]) == (3, {8: 1, 9: 1})
    assert ngrams.lookup([1, 6, 7]) == (3, {8: 1})  # b.py's `1 6 7`, not the shorter `6 7`
    assert ngrams.lookup([3, 6, 7]) == (2, {8: 2, 9: 1})  # every file's `6 7`
    assert ngrams.lookup([3, 4]) is None  # nothing; and a lone `7` would be below MIN_ORDER
    assert ngrams.lookup([1, 6, 7], exclude=1) == (2, {8: 1, 9: 1})  # b.py left out: a.py's `6 7`
    assert ngrams.lookup([8, 1, 6]) == (2, {7: 1})  # no match across files: a.py's 8 does not precede b.py's 1


def test_project_ngrams_pack_fewer_tokens_per_key_for_large_vocabularies() -> None:
    big = 151_000  # Qwen2.5's vocabulary: 18 bits a token, three to a 64-bit key
    ngrams = ProjectNgrams.build([("a.py", [150_999, 7, 150_998, 3, 4])], vocab_size=big)
    assert ngrams.order == 3 and ngrams.lookup([150_999, 7, 150_998]) == (3, {3: 1})
    assert ngrams.lookup([0, 7, 150_998]) == (2, {3: 1})


def test_project_cache_trusts_longer_matches_and_skips_the_current_file() -> None:
    ngrams = ProjectNgrams.build([("a.py", [1, 2, 3, 4, 9]), ("here.py", [1, 2, 3, 4, 8])], vocab_size=16)
    other = ProjectCache(ngrams, [1, 2, 3], 0.4, exclude_path="here.py")
    lam, dist = other.cached([4])
    assert dist == {9: 1.0} and lam == pytest.approx(0.4)  # four tokens matched, all agree: the whole weight
    short, _ = ProjectCache(ngrams, [7, 3], 0.4, "here.py").cached([4])  # `3 4` only
    assert short == pytest.approx(0.1)
    ngrams = ProjectNgrams.build([("a.py", [1, 2, 3, 4, 9, 1, 2, 3, 4, 5])], vocab_size=16)
    split, dist = ProjectCache(ngrams, [1, 2, 3], 0.4, None).cached([4])
    assert dist == {9: 0.5, 5: 0.5} and split == pytest.approx(0.2)  # the project disagrees with itself


# -- retrieval ---------------------------------------------------------------------------------
HELPERS = """import json


def load_settings(path):
    with open(path) as f:
        return json.load(f)


def save_settings(path, settings):
    with open(path, "w") as f:
        json.dump(settings, f)
"""
OTHER = "def area(width, height):\n    return width * height\n"


class Index:
    """A SnippetIndex over texts, asked in text, as RepoContext asks it."""

    def __init__(self, tokenizer: Tokenizer, files: dict[str, str], window: int = 4, match: int = 4, stride: int = 2) -> None:
        self.tok, self.vocab, shape = tokenizer, Vocabulary.of(tokenizer), WindowShape(window, match, stride)
        self.index = SnippetIndex({p: FileWindows.of(t, tokenizer.encode(t), self.vocab, shape) for p, t in files.items()},
                                  tokenizer.vocab_size, shape)

    def query(self, text: str, k: int, exclude: str | None = None) -> list[Snippet]:
        return self.index.query(self.vocab.names(self.tok.encode(text)), k, exclude)


def test_retrieval_finds_the_window_that_shares_the_names_and_never_the_file_itself(tok: Tokenizer) -> None:  # noqa: F811
    index = Index(tok, {"helpers.py": HELPERS, "geometry.py": OTHER, "app.py": "settings = load_settings(path)\n"})
    (best,) = index.query("settings = load_settings(config_path)\n", k=2, exclude="app.py")
    assert best.path == "helpers.py" and "def load_settings(path):" in best.text and best.score > 0
    assert all(s.path != "app.py" for s in index.query("load_settings settings path", k=3, exclude="app.py"))
    assert index.query("x = (1 + 2)", k=2) == []  # no name in it
    again = Index(tok, {"helpers.py": HELPERS, "geometry.py": OTHER, "app.py": ""})
    assert again.query("settings path", 2) == again.query("settings path", 2)  # deterministic


def test_a_window_per_file_at_most_and_whole_lines(tok: Tokenizer) -> None:  # noqa: F811
    index = Index(tok, {"h.py": HELPERS * 3, "g.py": OTHER})
    got = index.query("load_settings save_settings settings width", k=3)
    assert [s.path for s in got].count("h.py") == 1 and all(s.text.endswith("\n") for s in got)


def test_the_query_is_the_lines_before_the_cursor_line_so_typing_keeps_it() -> None:
    prefix = "a = 1\nb = load_settings(p)\nc = sa"
    assert query_lines(prefix, 2) == "a = 1\nb = load_settings(p)\n" == query_lines(prefix + "ve_", 2)
    assert query_lines("x = 1\n", 5) == "x = 1\n" and query_lines("x", 5) == ""


# -- the context object ------------------------------------------------------------------------
def test_repo_context_rebuilds_only_what_changed(tok: Tokenizer) -> None:  # noqa: F811
    repo = RepoContext(tok)
    assert repo.snapshot is None and repo.snippets("a.py", "x\n") == []
    repo.set_file("helpers.py", HELPERS)
    repo.set_file("geometry.py", OTHER)
    first = repo.build()
    assert not repo.stale and first.stats["files"] == 2 and first.ngrams is not None and first.ngrams.tokens > 20
    kept = repo._analysed["helpers.py"]
    repo.set_file("geometry.py", OTHER + "\n")
    repo.set_file("helpers.py", HELPERS)  # the same text: nothing to redo
    assert repo.stale
    repo.build()
    assert repo._analysed["helpers.py"] is kept and repo._analysed["geometry.py"].windows.text == OTHER + "\n"
    repo.remove_file("geometry.py")
    assert repo.build().stats["files"] == 1


def test_the_ngram_index_stops_at_its_token_budget(tok: Tokenizer) -> None:  # noqa: F811
    repo = RepoContext(tok, RepoContextConfig(max_ngram_tokens=len(tok.encode(HELPERS)) + 5))
    repo.set_file("a.py", HELPERS)
    repo.set_file("b.py", HELPERS + HELPERS)
    snap = repo.build()
    assert snap.ngrams.paths == ("a.py",) and snap.stats["files"] == 2  # retrieval still sees both


# -- the prompt --------------------------------------------------------------------------------
@pytest.mark.parametrize("file_sep", [False, True])
@pytest.mark.parametrize("suffix", ["", "\nprint(config)\n"])
def test_snippets_go_in_front_and_the_prompt_only_grows_at_its_end_while_typing(
        tok: Tokenizer, file_sep: bool, suffix: str) -> None:  # noqa: F811
    index = Index(tok, {"helpers.py": HELPERS})
    prefix = "import os\n\nconfig = load_settings(os.environ['CFG'])\nsettings = load_"
    snippets = index.query(query_lines(prefix, 12), 2)
    context = snippet_ids(tok, snippets, 60, file_sep)
    assert 0 < len(context) <= 60
    earlier = build_prompt(tok, prefix, suffix, 200, fim=True, context=context, file_sep=file_sep)
    later = build_prompt(tok, prefix + "settings(", suffix, 200, fim=True, start_hint=earlier.prefix_start,
                         context=context, file_sep=file_sep)
    kept = earlier.ids  # the healed token is retyped, so what was sent before is a prefix of what is sent now
    assert later.ids[: len(kept)] == kept
    text = tok.decode(later.ids)
    assert text.index("def load_settings") < text.index("config = load_settings")  # in front of the file
    if file_sep:
        assert later.ids.count(tok.special_ids["file_sep"]) == 2  # one snippet, then the file
    else:
        assert "# helpers.py\n" in text and "# def load_settings(path):\n" in text and "\n#\n" in text  # a blank line
        assert tok.special_ids["file_sep"] not in later.ids


def test_snippets_keep_to_their_budget(tok: Tokenizer) -> None:  # noqa: F811
    index = Index(tok, {"helpers.py": HELPERS, "b.py": HELPERS.replace("settings", "options")}, window=12, match=12, stride=6)
    snippets = index.query("load_settings save_options path", 2)
    assert len(snippets) == 2
    assert len(snippet_ids(tok, snippets, 20, False)) <= 20 < len(snippet_ids(tok, snippets, 400, False))
    assert snippet_ids(tok, snippets, 3, True) == []  # not even a line fits


# -- through the engine ------------------------------------------------------------------------
def test_the_engine_copies_a_name_only_another_file_defines(random_model: GPT, tok: Tokenizer) -> None:  # noqa: F811
    other = "def combine_parts(items, limit):\n    return items[:limit]\n\ntotal = combine_parts(items, limit)\n"
    prefix = "values = [1, 2, 3]\nresult = combine_parts("
    engine = CompletionEngine(random_model, tok, min_score=-1e9, context_weight=0.0)
    alone = engine.complete(prefix, "", n=1)
    repo = RepoContext(tok, RepoContextConfig(snippets=False))
    repo.set_file("parts.py", other)
    repo.set_file("here.py", prefix + "values, 9)\n")  # its own copy on disk: never its context
    repo.build()
    engine.clear_cache()
    helped = engine.complete(prefix, "", n=1, repo=repo, path="here.py")
    assert alone[0].text != "items, limit)" and helped[0].text == "items, limit)"
    engine.clear_cache()
    assert engine.complete(prefix, "", n=1, repo=repo, path="parts.py")[0].text != "items, limit)"
    engine.clear_cache()
    block = engine.complete(prefix, "", n=1, multiline=True)
    engine.clear_cache()  # a block gets no project n-grams: copying them broke bodies' syntax
    assert engine.complete(prefix, "", n=1, multiline=True, repo=repo, path="here.py") == block


def test_a_block_mixes_in_no_project_or_snippet_ngrams(tok: Tokenizer) -> None:  # noqa: F811
    repo = RepoContext(tok)
    repo.set_file("helpers.py", HELPERS)
    repo.build()
    prefix = "def load_settings(path):\n    with open(path) as f:\n"
    snippets = repo.snippets("here.py", prefix)
    ids = tok.encode(prefix)
    assert snippets and len(project_caches(repo, snippets, ids, "here.py", multiline=False)) == 2
    assert project_caches(repo, snippets, ids, "here.py", multiline=True) == []  # they broke bodies' syntax


def test_every_context_of_a_tokenizer_shares_one_vocabulary(tok: Tokenizer) -> None:  # noqa: F811
    # Analysing the vocabulary takes 60 ms: evaluation and prepare make a context per repository.
    assert RepoContext(tok)._words is RepoContext(tok, RepoContextConfig(query=6))._words is Vocabulary.of(tok)


def test_project_ngrams_are_stored_compactly(tok: Tokenizer) -> None:  # noqa: F811
    ids = np.asarray(tok.encode(HELPERS * 50))
    ngrams = ProjectNgrams.build([("a.py", ids)], tok.vocab_size)
    assert ngrams.nbytes <= 14 * ngrams.tokens
