"""The prompt's own n-grams: longest-match lookup, the mixture, and copying through the engine."""
from __future__ import annotations

import pytest
import torch
from test_engine import code, random_model, tok  # noqa: F401  (module fixtures)

from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.context_ngrams import EVIDENCE, ContextNgrams, mix, trust
from codecomplete.engine.model import GPT
from codecomplete.engine.tokenizer import Tokenizer

SEP = frozenset({0})


def test_lookup_takes_the_longest_match_and_counts_what_followed() -> None:
    ids = [5, 6, 7, 8, 9, 6, 7, 3, 6, 7, 8, 4, 5, 6, 7]
    ngrams = ContextNgrams(ids, SEP, 0.5)
    assert ngrams.lookup([]) == (3, {8: 1})  # `5 6 7` was followed by 8; `4 5 6 7` never was followed
    assert ngrams.lookup([8]) == (4, {9: 1})  # the generated token extends the match: `5 6 7 8`
    assert ngrams.lookup([8, 1, 6, 7]) == (2, {8: 2, 3: 1})  # every token that followed `6 7`
    assert ngrams.lookup([8, 1, 2]) is None


def test_runs_do_not_cross_separators() -> None:
    ngrams = ContextNgrams([1, 2, 0, 1, 2, 0, 1], SEP, 0.5)
    assert ngrams.lookup([]) == (1, {2: 2})  # `0 1` is no match: 0 never counts
    assert ngrams.lookup([2]) is None  # nothing ever followed by the separator


def test_mix_moves_trust_of_the_match_order_to_what_followed() -> None:
    ngrams = ContextNgrams([4, 5, 6, 4, 5, 7, 9, 4, 5], SEP, 0.6)
    logits = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    mixed = mix(logits, [[], [1]], [ngrams]).exp()  # row 0 continues `4 5`; row 1 ends in 1, never seen
    lam = trust(2, 0.6 * 9 / (9 + EVIDENCE))
    expected = (1 - lam) * logits[0].softmax(-1)
    expected[6] += lam / 2
    expected[7] += lam / 2
    torch.testing.assert_close(mixed[0], expected)
    torch.testing.assert_close(mixed[1], logits[1].softmax(-1))
    assert mix(logits, [[], []], [ContextNgrams([4, 5, 6, 4, 5], SEP, 0.0)]) is logits
    assert trust(1, 0.6) < trust(2, 0.6) < trust(8, 0.6) < 0.6  # longer matches earn more trust


def test_a_short_prompt_earns_less_trust_than_a_long_one() -> None:
    """Seven tokens of `def add(a, b):` say little about the file; the body should not copy `b):`."""
    weights = [ContextNgrams([4, 5, 6] * k, SEP, 0.5).weight for k in (2, 20, 200)]
    assert weights[0] < 0.25 < weights[1] < weights[2] < 0.5  # 6 tokens: under half the weight
    assert weights[2] > 0.45  # 600 tokens: nearly all of it


def test_the_engine_copies_a_phrase_from_the_file_that_the_model_alone_does_not(random_model: GPT, tok: Tokenizer) -> None:  # noqa: F811
    prefix = "total = combine_parts(items, limit)\nprint(total)\nother = combine_parts("
    alone = CompletionEngine(random_model, tok, min_score=-1e9, context_weight=0.0).complete(prefix, "", n=1)
    mixed = CompletionEngine(random_model, tok, min_score=-1e9, context_weight=0.5).complete(prefix, "", n=1)
    assert alone[0].text != "items, limit)"
    assert mixed[0].text == "items, limit)"
    assert mixed[0].score > alone[0].score  # copying is what the mixture is sure of


def test_caches_that_together_claim_more_than_the_model_has_are_scaled_down() -> None:
    a = ContextNgrams([4, 5, 6] * 30 + [4, 5], SEP, 0.9)  # after `4 5`: 6, trusted at about 0.68
    b = ContextNgrams([4, 5, 7] * 30 + [4, 5], SEP, 0.9)  # after `4 5`: 7, as much
    logits = torch.zeros(1, 12)
    mixed = mix(logits, [[]], [a, b]).exp()[0]
    assert torch.isfinite(mixed).all() and mixed.sum().item() == pytest.approx(1.0)
    assert mixed[6].item() == pytest.approx(mixed[7].item()) and mixed[0].item() == pytest.approx(0.05 / 12)
