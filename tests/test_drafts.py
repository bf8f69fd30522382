"""Drafts from text already there: what the caches propose, and decoding that verifies them.

Greedy rows must come out token for token as one token per pass gives them, with the caches
mixed in, healing masks and stop rules; sampled rows must keep their distribution.
"""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from test_engine import DOC, code, overfit_model, random_model, tok  # noqa: F401  (module fixtures)

from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.context_ngrams import ContextNgrams
from codecomplete.engine.decoding import DecodeParams, Decoder, sample_with_draft
from codecomplete.engine.model import GPT, config_from_preset
from codecomplete.engine.project_ngrams import ProjectCache, ProjectNgrams
from codecomplete.engine.prompt import build_prompt
from codecomplete.engine.stops import StopRule
from codecomplete.engine.tokenizer import Tokenizer

SEP = frozenset({0})


# -- what the caches propose -------------------------------------------------------------------
def test_prompt_drafts_copy_what_followed_the_latest_longest_match() -> None:
    ngrams = ContextNgrams([5, 6, 7, 8, 9, 6, 7, 3, 6, 7, 8, 4, 5, 6, 7], SEP, 0.5)
    assert ngrams.draft([], 3) == (3, [8, 9, 6])  # `5 6 7` at the start, not the later `6 7`s
    assert ngrams.draft([8], 3) == (4, [9, 6, 7])  # the generated token extends the match
    assert ngrams.draft([8, 1, 6, 7], 3) == (2, [8, 4, 5])  # three `6 7`s: the latest
    assert ngrams.draft([8, 1, 2], 3) == (0, [])
    assert ContextNgrams([1, 2, 0, 1, 2, 3, 0, 1], SEP, 0.5).draft([], 5) == (1, [2, 3])  # up to a separator


def test_project_drafts_chain_what_most_often_followed() -> None:
    ngrams = ProjectNgrams.build([("a.py", [1, 2, 3, 4, 9, 5]), ("b.py", [2, 3, 4, 9, 6, 6]), ("here.py", [1, 2, 3, 4, 8])], 16)
    assert ProjectCache(ngrams, [1, 2, 3], 0.4, "here.py").draft([4], 5) == (4, [9, 5])  # a.py's run, to its end
    assert ProjectCache(ngrams, [7, 3], 0.4, "here.py").draft([4], 1) == (2, [9])  # `3 4` then 9, twice
    assert ProjectCache(ngrams, [7, 7], 0.4, None).draft([7], 3) == (0, [])


# -- greedy: the same tokens -------------------------------------------------------------------
def project_cache(tok: Tokenizer, code: list[str], prompt_ids: list[int]) -> ProjectCache:  # noqa: F811
    ngrams = ProjectNgrams.build([(f"m{i}.py", tok.encode(text)) for i, text in enumerate(code)], tok.vocab_size)
    return ProjectCache(ngrams, prompt_ids, 0.4, None)


def decode_both(model: GPT, tok: Tokenizer, prefix: str, caches_of, multiline: bool, n: int, **kw) -> tuple:  # noqa: F811
    """Decode with drafts and with one token per pass; each with its own caches and Decoder."""
    prompt = build_prompt(tok, prefix, "", model.config.block_size - 24, fim=True)
    out, stats = [], []
    for k in (8, 0):
        cache = model.new_cache(1)
        with torch.no_grad():
            logits, _ = model(torch.tensor([prompt.ids]), cache=cache, last_only=True)
        decoder = Decoder(model, tok)
        stop = StopRule.at_cursor(prefix, multiline)
        params = DecodeParams(n=n, max_new_tokens=24, draft_tokens=k, **kw)
        out.append(decoder.decode(cache, logits[:, -1], params, prompt.heal, stop.cut, caches=caches_of(prompt.ids),
                                  lead=stop.lead.encode()))
        stats.append(decoder.stats)
    return out, stats


@pytest.mark.parametrize(
    ("model_name", "prefix", "multiline", "turned_down"),
    [
        ("overfit_model", DOC + "\n\n" + DOC[: DOC.index("total = 0")], True, True),  # the prompt holds what comes next
        ("overfit_model", DOC + "\n\n" + DOC[: DOC.index("    return os")], False, True),  # one line
        ("overfit_model", DOC + "\n" + DOC[: DOC.index("count_w") + 7], True, True),  # healing `count_w` into `count_words`
        ("random_model", DOC + "\nimport os\n" + DOC[: DOC.index("(items")], True, False),  # the mixture copies
    ],
)
def test_greedy_rows_with_drafts_are_the_rows_without(request: pytest.FixtureRequest, tok: Tokenizer, code: list[str],  # noqa: F811
                                                      model_name: str, prefix: str, multiline: bool, turned_down: bool) -> None:
    model = request.getfixturevalue(model_name)

    def caches(ids: list[int]) -> list:
        return [ContextNgrams(ids, frozenset(tok.special_ids.values()), 0.5), project_cache(tok, code, ids)]

    (drafted, plain), (stats, plain_stats) = decode_both(model, tok, prefix, caches, multiline, n=3)
    assert [(d.text, d.reason, d.n_tokens) for d in drafted] == [(d.text, d.reason, d.n_tokens) for d in plain]
    assert [d.logprob for d in drafted] == pytest.approx([d.logprob for d in plain], abs=1e-4)
    assert sum(d.n_tokens for d in plain) >= 15  # enough tokens to prove something
    assert stats.accepted > 0 and (stats.accepted < stats.drafted) == turned_down  # kept drafts, and turned some down
    assert stats.passes <= plain_stats.passes and plain_stats.drafted == 0  # every pass gives each live row a token


# -- sampling: the same distribution -----------------------------------------------------------
class MarkovModel(GPT):
    """Stub: the next token's logits depend on the current token only, through a fixed table."""

    def __init__(self, vocab_size: int, table: torch.Tensor) -> None:
        super().__init__(config_from_preset("tiny", vocab_size))
        self.table = table  # (V, V) logits

    def hidden(self, idx, cache=None):  # the logits themselves, for head() to pass on
        if cache is not None:
            cache.pos += idx.size(1)
        return self.table[idx]

    def head(self, x):
        return x


class FixedDraft:
    """A draft-only cache (weight 0: never mixed) that always proposes the same tokens."""

    weight = 0.0

    def __init__(self, run: list[int]) -> None:
        self.run = run

    def cached(self, generated: list[int]) -> None:
        return None

    def draft(self, generated: list[int], k: int) -> tuple[int, list[int]]:
        return 5, self.run[len(generated) :][:k]


def exact_sequences(table: torch.Tensor, first: int, support: list[int], steps: int, temperature: float,
                    top_k: int | None) -> dict[tuple[int, ...], float]:
    """The probability of every sequence of `steps` tokens after `first`, from the table."""
    def step(t: int) -> dict[int, float]:
        logits = table[t, support] / temperature
        if top_k is not None:
            logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
        return dict(zip(support, logits.softmax(-1).tolist()))

    seqs = {(): 1.0}
    for _ in range(steps):
        seqs = {s + (t,): p * q for s, p in seqs.items() for t, q in step(s[-1] if s else first).items()}
    return seqs


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 2)])
def test_sampled_rows_with_drafts_keep_the_distribution(tok: Tokenizer, temperature: float, top_k: int | None) -> None:  # noqa: F811
    support = [tok.encode(ch)[0] for ch in "xyz"]
    vocab = config_from_preset("tiny", tok.vocab_size).vocab_size
    table = torch.full((vocab, vocab), -1e4)
    table[:, support] = torch.randn(vocab, 3, generator=torch.Generator().manual_seed(1)) * 1.5
    model = MarkovModel(tok.vocab_size, table).eval()
    first, rows, steps = tok.eot_id, 6000, 3
    exact = exact_sequences(table, first, support, steps, temperature, top_k)
    x, y, _ = support
    def text(seq: tuple[int, ...]) -> str:
        return "".join("xyz"[support.index(t)] for t in seq)

    decoder = Decoder(model, tok)
    for draft in ([x, y, y], [x, x, x], []):  # a likely guess, an unlikely one, none
        cache = model.new_cache(1, max_len=8)
        logits, _ = model(torch.tensor([[first]]), cache=cache, last_only=True)
        params = DecodeParams(n=rows, max_new_tokens=steps, temperature=temperature, top_k=top_k, seed=3)
        out = decoder.decode(cache, logits[:, -1], params, b"", lambda text: None, caches=[FixedDraft(draft)])
        seen = Counter(d.text for d in out)
        tv = sum(abs(seen[text(s)] / rows - p) for s, p in exact.items()) / 2  # total variation distance
        # Sampling noise here is under 0.03 (the row without a draft measures it); keeping a draft
        # 30% more often than p(d) gives 0.08, keeping every draft 0.74.
        assert tv < 0.05, (draft, tv)
        assert (0 < decoder.stats.accepted < decoder.stats.drafted) == bool(draft)


def test_a_draft_is_kept_with_its_probability_and_otherwise_never() -> None:
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    got = sample_with_draft(probs, [1, 1, None] * 4000, gen).view(4000, 3)
    freq = torch.stack([torch.bincount(got[:, r], minlength=3) / 4000 for r in range(3)])
    torch.testing.assert_close(freq, probs[:3], atol=0.03, rtol=0)
    assert (got[:, 1] == 1).all()  # a certain draft is always kept


def test_drafts_respect_the_token_budget_and_the_cache(random_model: GPT, tok: Tokenizer) -> None:  # noqa: F811
    ids = [tok.eot_id, *tok.encode(DOC * 4)][:100]
    assert len(ids) == 100
    cache = random_model.new_cache(1, max_len=110)  # room for 10 tokens after the prompt, and the last is never fed
    logits, _ = random_model(torch.tensor([ids]), cache=cache, last_only=True)
    always = FixedDraft([random.Random(0).randrange(tok.vocab_size) for _ in range(40)])
    out = Decoder(random_model, tok).decode(cache, logits[:, -1], DecodeParams(n=2, max_new_tokens=40), b"", lambda t: None,
                                            caches=[always])
    assert any(d.reason == "length" for d in out)
    assert all(d.n_tokens == 11 for d in out if d.reason == "length")


def test_the_previous_suggestion_drafts_the_next_request(random_model: GPT, tok: Tokenizer) -> None:  # noqa: F811
    prefix, kw = "def load(path):\n    with open(path) as f:\n        ", {"n": 3, "max_new_tokens": 16, "multiline": True}
    fresh = CompletionEngine(random_model, tok, min_score=-1e9)
    first = fresh.complete(prefix, "", **kw)
    alone = fresh.decoder.stats.accepted
    again = fresh.complete(prefix, "", max_lines=7, **kw)  # another request: no answer to reuse, but the same text
    assert not fresh.stats.from_earlier_answer and [c.text for c in again] == [c.text for c in first]
    assert fresh.decoder.stats.accepted > alone + 5


@pytest.mark.parametrize("multiline", [False, True])
def test_the_engine_answers_the_same_with_and_without_drafts(overfit_model: GPT, tok: Tokenizer, multiline: bool) -> None:  # noqa: F811
    kw = {"n": 3, "max_new_tokens": 24, "multiline": multiline}
    for prefix in (DOC + "\n\n" + DOC[: DOC.index("total = 0")], DOC + "\n" + DOC[: DOC.index("count_w") + 7]):
        drafted = CompletionEngine(overfit_model, tok, min_score=-1e9)
        got = drafted.complete(prefix, "", **kw)
        assert drafted.decoder.stats.accepted > 0
        plain = CompletionEngine(overfit_model, tok, min_score=-1e9, draft_tokens=0).complete(prefix, "", **kw)
        assert [(c.text, c.reason) for c in got] == [(c.text, c.reason) for c in plain]
        assert [c.score for c in got] == pytest.approx([c.score for c in plain], abs=1e-4)
