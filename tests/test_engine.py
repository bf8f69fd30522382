"""The completion engine on tiny models: prompts, token healing, decoding, caching, cancellation.

Three kinds of model, each where it proves something: a random GPT (real attention, so prefix
reuse must match a cold run exactly), a GPT overfit on DOC (it knows what comes next, so the
completion is checkable text), and ChainModel, whose next token is a table lookup with one fixed
log-probability (loops and scores exact to the bit).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import overfit_tiny, synthetic_module

from codecomplete.engine import decoding
from codecomplete.engine.checkpoint import save_checkpoint
from codecomplete.engine.completion import Candidate, CompletionEngine
from codecomplete.engine.decoding import Cancelled, Decoded, DecodeParams, Decoder, loop_period
from codecomplete.engine.healing import TokenHealer, remaining, worth_healing
from codecomplete.engine.model import GPT, KVCache, config_from_preset
from codecomplete.engine.prompt import build_prompt, keep_head_lines, keep_tail_lines
from codecomplete.engine.stops import StopRule
from codecomplete.engine.tokenizer import Tokenizer
from codecomplete.train.tokenizer_train import train_tokenizer

DOC = '''import os


def join_all(items, root):
    total = 0
    for item in items:
        total += len(item)
    return os.path.join(root, *items)


def count_words(line):
    return len(line.split())
'''
BODY = "\n    total = 0\n    for item in items:\n        total += len(item)\n    return os.path.join(root, *items)"
AFTER_DEF = DOC.index("root):") + len("root):")  # cursor at the end of the first def line




@pytest.fixture(scope="module")
def code() -> list[str]:
    rng = random.Random(0)
    return [synthetic_module(rng) for _ in range(12)]


@pytest.fixture(scope="module")
def tok(code: list[str]) -> Tokenizer:
    return train_tokenizer([*code, *[DOC] * 5], 600)


@pytest.fixture(scope="module")
def random_model(tok: Tokenizer) -> GPT:
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tok.vocab_size)).eval()
    with torch.no_grad():  # at GPT-2 init greedy repeats the last token; larger weights vary more
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "transformer.wte.weight":
                p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def overfit_model(tok: Tokenizer) -> GPT:
    return overfit_tiny(tok, DOC, steps=100, max_loss=0.02)


MARGIN = 8.0  # logit of the chosen token; every other token has 0


class ChainModel(GPT):
    """Stub: after token t the model picks chain[t] (else `default`), always with the same probability."""

    def __init__(self, vocab_size: int, chain: dict[int, int], default: int) -> None:
        super().__init__(config_from_preset("tiny", vocab_size))
        self.chain, self.default = chain, default

    def hidden(self, idx, cache=None):  # the logits themselves, for head() to pass on
        B, T = idx.shape
        if cache is not None:
            cache.pos += T
        nxt = torch.tensor([[self.chain.get(t, self.default) for t in row] for row in idx.tolist()])
        return torch.zeros(B, T, self.config.vocab_size).scatter_(2, nxt.unsqueeze(-1), MARGIN)

    def head(self, x):
        return x


def chosen_logprob(vocab_rows: int) -> float:
    return MARGIN - torch.logsumexp(torch.tensor([MARGIN] + [0.0] * (vocab_rows - 1)), 0).item()


def decode_chain(model: ChainModel, tok: Tokenizer, params: DecodeParams) -> list[Decoded]:
    """Decode after a bare <eot> prompt: nothing to heal, so every token is the chain's choice."""
    cache, logits = prefill(model, [tok.eot_id])
    return Decoder(model, tok).decode(cache, logits, params, b"", StopRule.at_cursor("", False).cut)


def prefill(model: GPT, ids: list[int]) -> tuple[KVCache, torch.Tensor]:
    cache = model.new_cache(1)
    logits, _ = model(torch.tensor([ids]), cache=cache, last_only=True)
    return cache, logits[:, -1]


def decode(model: GPT, tok: Tokenizer, prefix: str, params: DecodeParams, multiline: bool = False, **kw) -> list[Decoded]:
    prompt = build_prompt(tok, prefix, "", model.config.block_size - params.max_new_tokens, fim=True)
    cache, logits = prefill(model, prompt.ids)
    return Decoder(model, tok).decode(cache, logits, params, prompt.heal, StopRule.at_cursor(prefix, multiline).cut, **kw)


def record_decode_inputs(model: GPT, rows: int) -> tuple[list[list[int]], torch.utils.hooks.RemovableHandle]:
    """Token ids fed to the model at each decoding step (prefill calls have one row)."""
    steps: list[list[int]] = []

    def hook(_module, args):
        if args[0].size(0) == rows and args[0].size(1) == 1:
            steps.append(args[0][:, 0].tolist())

    return steps, model.transformer.wte.register_forward_pre_hook(hook)  # every pass embeds its ids


def texts(cands: list[Candidate]) -> list[str]:
    return [c.text for c in cands]


def same_candidates(a: list[Candidate], b: list[Candidate]) -> None:
    assert [(c.text, c.reason) for c in a] == [(c.text, c.reason) for c in b]  # texts: zero tolerance
    assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-4)


# --- prompt ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "fim", "layout"),
    [
        ("x)\n    return x\n", True, "fim"),
        ("x)\n    return x\n", False, "plain"),
        ("", True, "plain"),
        ("  \n\n", True, "plain"),  # only whitespace after the cursor: nothing to fill in
    ],
)
def test_prompt_layout(tok: Tokenizer, suffix: str, fim: bool, layout: str) -> None:
    s = tok.special_ids
    prefix = "def join_all(items, root):\n    return os.path.join(root, "
    p = build_prompt(tok, prefix, suffix, 100, fim=fim)
    prefix_ids = tok.encode(prefix)
    assert p.heal == tok.token_bytes(prefix_ids[-1]) and p.prefix_start == 0
    if layout == "fim":
        expected = [s["eot"], s["fim_prefix"], s["fim_suffix"], *tok.encode(suffix), s["fim_middle"], *prefix_ids[:-1]]
    else:
        expected = [s["eot"], *prefix_ids[:-1]]
    assert p.ids == expected


@pytest.mark.parametrize(("prefix", "heal"), [("import os\nos.pa", b"pa"), ("x = ", b" "), ("", b""), ("def", b"def"),
                                             ("def f():\n    ", b""),  # after indentation: a whole pre-token, kept
                                             (DOC[:AFTER_DEF], b""), ("d = {'a':", b"")])  # after a colon: kept
def test_prompt_heals_the_last_token(tok: Tokenizer, prefix: str, heal: bytes) -> None:
    p = build_prompt(tok, prefix, "", 100, fim=True)
    assert p.heal == heal
    assert tok.decode(p.ids[1:]).encode() + p.heal == prefix.encode()
    assert p.ids[0] == tok.eot_id


@pytest.mark.parametrize("suffix", ["", "\n\nprint(join_all([], '.'))\n"])
def test_keystroke_only_extends_the_prompt(tok: Tokenizer, suffix: str) -> None:
    """Typing changes at most the last word's tokens; a new word or symbol extends the ids."""
    for k in range(1, len(DOC)):
        before, after = build_prompt(tok, DOC[:k], suffix, 1000, True), build_prompt(tok, DOC[: k + 1], suffix, 1000, True)
        words = tok.hf.pre_tokenizer.pre_tokenize_str(DOC[:k])
        head = len(before.ids) - len(tok.encode(DOC[:k])) + bool(before.heal)  # special tokens and suffix before the prefix
        stable = head + len(tok.encode(DOC[: words[-1][1][0]]))  # tokens before the last word
        assert after.ids[:stable] == before.ids[:stable], repr(DOC[:k][-10:])
        if len(tok.hf.pre_tokenizer.pre_tokenize_str(DOC[: k + 1])) > len(words):  # a new word starts
            assert after.ids[: len(before.ids)] == before.ids, repr(DOC[: k + 1][-10:])


def whole_line_tail(text: str, start: int) -> bool:
    return start == 0 or text[start - 1] == "\n"


@pytest.mark.parametrize("with_suffix", [False, True])
def test_long_input_is_cut_at_lines_near_the_cursor(tok: Tokenizer, code: list[str], with_suffix: bool) -> None:
    prefix, suffix = "".join(code[:6]), ("".join(code[6:]) if with_suffix else "")
    budget = 80
    p = build_prompt(tok, prefix, suffix, budget, fim=True)
    assert len(p.ids) <= budget - 1  # the healed token is retyped by the model, inside the budget
    assert p.prefix_start > 0 and whole_line_tail(prefix, p.prefix_start)
    kept = p.ids[p.ids.index(tok.special_ids["fim_middle"]) + 1 :] if with_suffix else p.ids
    assert tok.eot_id not in kept  # the start of the file is not in the window
    assert tok.decode(kept).encode() + p.heal == prefix[p.prefix_start :].encode()
    assert len(kept) >= budget // 3  # the window is used, not thrown away
    if with_suffix:
        head = tok.decode(p.ids[3 : p.ids.index(tok.special_ids["fim_middle"])])
        assert suffix.startswith(head) and head.endswith("\n") and 0 < len(tok.encode(head)) <= budget // 4


def test_keep_head_and_tail_lines_at_every_budget(tok: Tokenizer, code: list[str]) -> None:
    text = code[0]
    first_line = len(tok.encode(text[: text.index("\n") + 1]))
    for budget in range(first_line, 60):  # (a first line longer than the budget is cut mid-line)
        ids = keep_head_lines(tok, text, budget)
        head = tok.decode(ids)
        assert len(ids) <= budget and text.startswith(head)
        assert head.endswith("\n"), (budget, head[-30:])  # whole lines, the line end included
        start, ids = keep_tail_lines(tok, text, budget)
        assert len(ids) <= budget and whole_line_tail(text, start)
        assert tok.decode(ids) == text[start:]


def test_start_hint_keeps_the_cut_while_it_fits(tok: Tokenizer, code: list[str]) -> None:
    prefix = "".join(code[:4])
    first = build_prompt(tok, prefix, "", 80, fim=True)
    assert first.prefix_start > 0
    typed = prefix + "    x"
    again = build_prompt(tok, typed, "", 80, fim=True, start_hint=first.prefix_start)
    assert again.prefix_start == first.prefix_start
    kept = len(first.ids) - (not first.heal)  # an unhealed line break merges with indentation typed after it
    assert again.ids[:kept] == first.ids[:kept]  # the cached keys/values stay valid
    # a hint that is not a line start is ignored: the same cut as without one
    assert build_prompt(tok, typed, "", 80, True, first.prefix_start + 1) == build_prompt(tok, typed, "", 80, True)
    # a hint that leaves much less than a fresh cut keeps (lines deleted above the cursor, another file) is ignored
    deleted = prefix[: first.prefix_start] + "x = 1\n"
    assert build_prompt(tok, deleted, "", 80, True, first.prefix_start) == build_prompt(tok, deleted, "", 80, True)
    # once the window no longer fits, the cut moves down, to a line start again
    grown = prefix + code[5][:600]
    moved = build_prompt(tok, grown, "", 80, fim=True, start_hint=first.prefix_start)
    assert moved.prefix_start > first.prefix_start and whole_line_tail(grown, moved.prefix_start)
    assert len(moved.ids) <= 79


# --- token healing -----------------------------------------------------------------------------


def test_healer_allows_exactly_the_tokens_that_retype_pending(tok: Tokenizer) -> None:
    healer = TokenHealer(tok, 640)
    special = set(tok.special_ids.values())
    vocab = {i: tok.token_bytes(i) for i in range(tok.vocab_size) if i not in special}
    pendings = {b for b in vocab.values() if len(b) > 1}
    pendings |= {b"p", b"pa", b"path", b"    return", b"\n    ", b"zzzz", b"\xff", b"\xff\xff", b"\xe4\xb8", b"\x80", b"<|endoftext|>"}
    for pending in sorted(pendings):
        brute = sorted(i for i, b in vocab.items() if b.startswith(pending) or (b and pending.startswith(b)))
        got = healer.allowed(pending)
        assert sorted(got) == brute and len(got) == len(set(got)), pending
    mask = healer.mask(b"pa", torch.device("cpu"))
    assert mask.shape == (640,) and set(torch.isfinite(mask).nonzero().flatten().tolist()) == set(healer.allowed(b"pa"))
    assert not torch.isfinite(mask[tok.vocab_size :]).any()  # padding rows are never allowed


@pytest.mark.parametrize(("token", "heal"), [(b"pa", True), (b" ", True), (b"\n", True), (b"):", False), (b":", False),
                                           (b"]:", False), (b"\n    ", False)])
def test_worth_healing(token: bytes, heal: bool) -> None:
    assert worth_healing(token) is heal


def test_remaining() -> None:
    assert remaining(b"path", b"pa") == b"th"
    assert remaining(b"pa", b"path") == b""
    assert remaining(b"pa", b"pa") == b""


# --- decoding ----------------------------------------------------------------------------------


def test_greedy_rows_start_with_distinct_tokens_that_retype_the_heal(random_model: GPT, tok: Tokenizer) -> None:
    prefix = "import os\nos.pa"
    heal = build_prompt(tok, prefix, "", 80, True).heal
    assert heal == b"pa"
    steps, handle = record_decode_inputs(random_model, 3)
    try:
        out = decode(random_model, tok, prefix, DecodeParams(n=3, max_new_tokens=8, draft_tokens=0))  # a token per pass, as recorded
    finally:
        handle.remove()
    assert len(out) == 3 and len(set(steps[0])) == 3  # three rows, three different first tokens
    for row in range(3):
        first = tok.token_bytes(steps[0][row])
        assert first.startswith(heal) or heal.startswith(first)
        retyped = b"".join(tok.token_bytes(s[row]) for s in steps)
        assert retyped.startswith(heal)  # the heal is retyped first, and not part of the text
        assert out[row].text.startswith(retyped[len(heal) :].decode(errors="ignore"))  # the last token is never fed


@torch.no_grad()
def test_greedy_row_matches_an_uncached_greedy_loop(random_model: GPT, tok: Tokenizer) -> None:
    prompt = [tok.eot_id, *tok.encode("import os\n")]
    seq = list(prompt)
    while len(seq) < len(prompt) + 40:
        logits, _ = random_model(torch.tensor([seq]))
        nxt = int(logits[0, -1].argmax())
        if nxt in tok.special_ids.values():
            break
        seq.append(nxt)
    reference = seq[len(prompt) :]
    cache, logits = prefill(random_model, prompt)
    row = Decoder(random_model, tok).decode(cache, logits, DecodeParams(n=3, max_new_tokens=40), b"", lambda text: None)[0]
    assert row.n_tokens >= 10 and len(set(reference[: row.n_tokens])) > 1  # a constant continuation would prove little
    assert tok.decode(reference[: row.n_tokens]).startswith(row.text)


def test_seeded_sampling_is_repeatable(random_model: GPT, tok: Tokenizer) -> None:
    def sample(seed: int) -> list[str]:
        engine = CompletionEngine(random_model, tok, min_score=float("-inf"))  # fresh: no earlier answer to reuse
        return [c.text for c in engine.complete("import os\n", "", n=4, max_new_tokens=16, multiline=True, temperature=1.0, seed=seed)]

    a = sample(1)
    assert a == sample(1) and a != sample(2)
    assert len(a) > 1  # the rows are sampled independently


def test_a_tiny_top_p_decodes_greedily(random_model: GPT, tok: Tokenizer) -> None:
    greedy = decode(random_model, tok, "import os\n", DecodeParams(n=1, max_new_tokens=24), multiline=True)[0]
    nucleus = decode(random_model, tok, "import os\n", DecodeParams(n=3, max_new_tokens=24, temperature=1.0, top_p=1e-6, seed=5), multiline=True)
    assert greedy.n_tokens > 3 and all(d.text == greedy.text for d in nucleus)


def healing_positions(tok: Tokenizer) -> list[int]:
    """Cursor positions inside one of DOC's tokens whose start is itself a token (`count_w|ords`)."""
    ids, offsets = tok.encode_with_offsets(DOC)
    found = []
    for j, (a, b) in enumerate(offsets):
        for k in range(a + 1, b):
            head = tok.encode(DOC[:k])
            if head[:-1] == ids[:j] and tok.token_bytes(ids[j]).startswith(tok.token_bytes(head[-1])):
                found.append(k)
    return found


def test_healed_completion_continues_the_word(overfit_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(overfit_model, tok)
    positions = healing_positions(tok)
    assert len(positions) >= 3
    for k in positions:
        line_end = DOC.index("\n", k)
        if not DOC[k:line_end].strip():
            continue
        top = eng.complete(DOC[:k], "")[0].text
        assert DOC[:k] + top == DOC[:line_end], repr(DOC[:k][-12:])  # `os.pa` + `th...`, no `papath`


@pytest.mark.parametrize(
    ("ids", "period"),
    [([1, 2, 1, 2, 1, 2], 2), ([9, 1, 2, 1, 2, 1, 2], 2), ([5, 5, 5, 5], 1), ([3, 5, 5, 5, 5], 1), ([1, 2, 3] * 3, 3),
     ([5, 5, 5], None), ([1, 2, 1, 2], None), ([1, 2, 3, 4, 5, 6], None), ([], None), ([1, 2, 1, 2, 1, 3], None)],
)
def test_loop_period(ids: list[int], period: int | None) -> None:
    assert loop_period(ids) == period


@pytest.fixture(scope="module")
def xy(tok: Tokenizer) -> tuple[int, int, int]:
    """Ids of tokens b'x', b'y' and b'z'."""
    ids = {tok.token_bytes(i): i for i in range(tok.vocab_size)}
    return ids[b"x"], ids[b"y"], ids[b"z"]


@pytest.mark.parametrize("period", [1, 2])
def test_looping_row_is_cut_with_reason_loop(tok: Tokenizer, xy: tuple[int, int, int], period: int) -> None:
    x, y, _ = xy
    chain = {x: x} if period == 1 else {x: y, y: x}
    model = ChainModel(tok.vocab_size, chain, default=x)
    (d,) = decode_chain(model, tok, DecodeParams(n=1, max_new_tokens=20))
    assert d.reason == "loop"
    assert d.text == ("x" if period == 1 else "xy")  # the first round kept, the repeats dropped
    # every token had the same log-probability: the mean per token is that, whatever was dropped
    assert d.score == pytest.approx(chosen_logprob(model.config.vocab_size), abs=1e-5)


def test_scores_are_mean_logprob_per_token(tok: Tokenizer, xy: tuple[int, int, int]) -> None:
    x, y, z = xy
    model = ChainModel(tok.vocab_size, {x: y, y: z, z: tok.eot_id}, default=x)
    (d,) = decode_chain(model, tok, DecodeParams(n=1, max_new_tokens=20))
    assert (d.text, d.reason, d.n_tokens) == ("xyz", "eos", 3)
    assert d.score == pytest.approx(chosen_logprob(model.config.vocab_size), abs=1e-5)
    (d,) = decode_chain(model, tok, DecodeParams(n=1, max_new_tokens=2))
    assert (d.text, d.reason, d.n_tokens) == ("xy", "length", 2)


@pytest.mark.parametrize("multiline", [False, True])
def test_beam_search_returns_finished_candidates(overfit_model: GPT, tok: Tokenizer, multiline: bool) -> None:
    params = DecodeParams(n=3, max_new_tokens=40, num_beams=3)
    out = decode(overfit_model, tok, DOC[:AFTER_DEF], params, multiline=multiline)
    assert out
    for d in out:  # no half-decoded beam left over from the step before the search ended
        assert d.reason != "length" or d.n_tokens == params.max_new_tokens, d
    eng = CompletionEngine(overfit_model, tok)
    cands = eng.complete(DOC[:AFTER_DEF], "", multiline=multiline, num_beams=3)
    top = cands[0].text  # whole lines, the body's (beams finishing first end the search)
    assert cands[0].reason == "stop" and BODY.startswith(top) and top.count("\n") >= (2 if multiline else 1)
    scores = [c.score for c in cands]
    assert scores == sorted(scores, reverse=True) and len(set(texts(cands))) == len(cands)


def test_cancel_from_the_stop_callback(random_model: GPT, tok: Tokenizer) -> None:
    cancel, calls = threading.Event(), []

    def stop(text: str) -> None:
        calls.append(text)
        cancel.set()  # e.g. $/cancelRequest arriving while the first token is being checked

    prompt = build_prompt(tok, DOC[:AFTER_DEF], "", 80, True)
    cache, logits = prefill(random_model, prompt.ids)
    with pytest.raises(Cancelled):
        Decoder(random_model, tok).decode(cache, logits, DecodeParams(n=2, max_new_tokens=20), prompt.heal, stop, cancel)
    assert 1 <= len(calls) <= 2  # cancelled before the second step, not at the end
    with pytest.raises(Cancelled):
        Decoder(random_model, tok).decode(cache, logits, DecodeParams(num_beams=2), prompt.heal, stop, cancel)


# --- engine ------------------------------------------------------------------------------------


def test_ranking_sorts_merges_and_floors(random_model: GPT, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = CompletionEngine(random_model, tok, min_score=-3.0)
    rows = [
        Decoded("foo", -3.0, 3, "stop"),  # -1.0
        Decoded("bar", -0.2, 1, "eos"),  # -0.2
        Decoded("foo  ", -1.0, 2, "stop"),  # -0.5: the same text once tidied, better score
        Decoded("   ", -0.1, 1, "stop"),  # nothing to insert
        Decoded("low", -40.0, 4, "length"),  # -10: below the floor
        Decoded("baz", -2.0, 2, "length"),  # -1.0
    ]
    monkeypatch.setattr(eng.decoder, "decode", lambda *a, **k: rows)
    cands = eng.complete("x = ", "", n=5)
    assert [(c.text, c.score, c.reason) for c in cands[:2]] == [("bar", -0.2, "eos"), ("foo", -0.5, "stop")]
    assert sorted(texts(cands[2:])) == ["baz"]
    assert texts(eng.complete("y = ", "", n=2)) == ["bar", "foo"]  # at most n


def test_min_score_floor_on_a_random_model(random_model: GPT, tok: Tokenizer) -> None:
    prefix = DOC[:AFTER_DEF]
    assert CompletionEngine(random_model, tok, min_score=float("-inf")).complete(prefix, "")
    assert CompletionEngine(random_model, tok, min_score=-0.5).complete(prefix, "") == []


def test_candidates_sorted_and_distinct(random_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    for kw in ({}, {"multiline": True}, {"num_beams": 3}, {"temperature": 0.8, "top_p": 0.9, "top_k": 50}):
        cands = eng.complete(DOC[:AFTER_DEF], "\n", n=3, max_new_tokens=16, **kw)
        assert 1 <= len(cands) <= 3
        scores = [c.score for c in cands]
        assert scores == sorted(scores, reverse=True) and len(set(texts(cands))) == len(cands)
        assert all(c.text.strip() for c in cands)


def fresh_input(cands: list[Candidate]) -> str:
    """A character no candidate starts with, so that typing it needs new decoding."""
    return next(ch for ch in "q#Zx!" if not any(c.text.startswith(ch) for c in cands))


@pytest.mark.parametrize("suffix", ["", "\n\nprint(join_all(['a'], '.'))\n"])
def test_prefix_cache_reuse_matches_a_cold_run(random_model: GPT, tok: Tokenizer, suffix: str) -> None:
    kw = {"n": 3, "max_new_tokens": 12, "multiline": True}
    warm = CompletionEngine(random_model, tok, min_score=float("-inf"))
    prefix = DOC[: DOC.index("return os")]
    first = warm.complete(prefix, suffix, **kw)
    assert warm.stats.reused_tokens == 0 and warm.stats.prompt_tokens > 16
    for typed in (prefix + fresh_input(first), prefix):  # a keystroke, then backspace
        got = warm.complete(typed, suffix, **kw)
        assert not warm.stats.from_earlier_answer
        assert warm.stats.reused_tokens > 0 and warm.stats.reused_tokens >= warm.stats.prompt_tokens - 2
        same_candidates(got, CompletionEngine(random_model, tok, min_score=float("-inf")).complete(typed, suffix, **kw))


def test_typing_the_start_of_a_suggestion_answers_from_it(overfit_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(overfit_model, tok)
    first = eng.complete(DOC[:AFTER_DEF], "", multiline=True)
    assert first[0].text == BODY
    rest = eng.complete(DOC[:AFTER_DEF] + BODY[:9], "", multiline=True)
    assert eng.stats.from_earlier_answer and eng.stats.generated_tokens == 0
    assert rest[0] == Candidate(BODY[9:], first[0].score, first[0].reason)
    # other settings, or a character no suggestion has, decode again
    eng.complete(DOC[:AFTER_DEF] + BODY[:9], "", multiline=False)
    assert not eng.stats.from_earlier_answer
    eng.complete(DOC[:AFTER_DEF] + "\n    q", "", multiline=False)
    assert not eng.stats.from_earlier_answer


def test_cancel_from_another_thread_drops_the_prompt(random_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(random_model, tok)
    prefix = DOC[: DOC.index("return os")]
    decoding, cancel = threading.Event(), threading.Event()

    def hold(_module, args):
        if args[0].size(0) == 3:  # a decoding step: let the other thread cancel, then go on
            decoding.set()
            assert cancel.wait(10)

    canceller = threading.Thread(target=lambda: decoding.wait(10) and cancel.set())
    handle = random_model.transformer.wte.register_forward_pre_hook(hold)
    canceller.start()
    try:
        with pytest.raises(Cancelled):
            eng.complete(prefix, "", n=3, cancel=cancel)
    finally:
        handle.remove()
        canceller.join()
    # nothing of the cancelled request is reused, and the next answer is a cold run's
    again = eng.complete(prefix, "", n=3)
    assert eng.stats.reused_tokens == 0 and not eng.stats.from_earlier_answer
    same_candidates(again, CompletionEngine(random_model, tok).complete(prefix, "", n=3))


def test_cancelled_extension_of_a_cached_prompt_leaves_no_stale_cache(random_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    prefix = DOC[: DOC.index("return os")]
    first = eng.complete(prefix, "")
    typed = prefix + fresh_input(first)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        eng.complete(typed, "", cancel=cancel)
    for text in (typed, prefix):
        same_candidates(eng.complete(text, ""), CompletionEngine(random_model, tok, min_score=float("-inf")).complete(text, ""))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_deadline_in_the_past_returns_at_once(random_model: GPT, tok: Tokenizer, num_beams: int) -> None:
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    cands = eng.complete(DOC[:AFTER_DEF], "", num_beams=num_beams, deadline=time.monotonic() - 1)
    assert eng.stats.generated_tokens == 0
    assert all(c.reason == "deadline" for c in cands)


class StepClock:
    """time.monotonic for engine.decoding that advances one second per call: deadlines by steps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_deadline_mid_decode_keeps_what_is_there_and_is_not_remembered(
    overfit_model: GPT, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = CompletionEngine(overfit_model, tok)
    clock = StepClock()
    monkeypatch.setattr(decoding, "time", clock)
    cut = eng.complete(DOC[:AFTER_DEF], "", multiline=True, deadline=6.5)  # six steps
    assert cut and cut[0].reason == "deadline" and BODY.startswith(cut[0].text) and cut[0].text != BODY
    assert eng.stats.generated_tokens <= 3 * 6
    full = eng.complete(DOC[:AFTER_DEF], "", multiline=True)  # no deadline now: finish the job
    assert not eng.stats.from_earlier_answer
    assert full[0].text == BODY


@pytest.mark.parametrize(("prefix", "suffix"), [("", ""), ("", "x = 1\n"), ("\n\n", ""), ("x", "")])
def test_empty_and_tiny_inputs(random_model: GPT, tok: Tokenizer, prefix: str, suffix: str) -> None:
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    for multiline in (False, True):
        cands = eng.complete(prefix, suffix, multiline=multiline, max_new_tokens=8)
        assert all(isinstance(c.text, str) and c.text.strip() for c in cands)


def test_huge_input_fits_the_model(random_model: GPT, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    line = "    value = compute(items, index) + 1\n"
    huge = line * (5_000_000 // len(line))
    tokenized: list[int] = []  # characters per tokenizer call
    for name in ("encode", "encode_with_offsets"):
        real = getattr(tok, name)
        monkeypatch.setattr(tok, name, lambda text, real=real: tokenized.append(len(text)) or real(text))
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    for prefix, suffix in ((huge, ""), ("def f():\n", huge), (huge, huge), (huge + "x", huge)):
        cands = eng.complete(prefix, suffix, max_new_tokens=8)
        assert 0 < eng.stats.prompt_tokens <= random_model.config.block_size - 8
        assert all(isinstance(c.text, str) for c in cands)
    assert max(tokenized) < 50_000  # a window near the cursor is tokenized, never the whole file


ODD = [
    "s = '😀 ok'\nt = '😀",  # the cursor right after a 4-byte character (split over byte tokens)
    "名前 = '世界'\n# 注释：",
    "name = 'cafe\u0301'\nx = 'e\u0301",  # combining acute accent
    "x = 1\ry = 2\r",  # lone carriage returns (classic Mac line ends)
    "s = '\u200b\ufeff\U0010ffff'\n",
    "x = '<|endoftext|>' + '<|fim_middle|>",  # special-token text inside the document
]


@pytest.mark.parametrize("prefix", ODD)
def test_odd_unicode_round_trips(random_model: GPT, tok: Tokenizer, prefix: str) -> None:
    eng = CompletionEngine(random_model, tok, min_score=float("-inf"))
    for suffix in ("", "'\n😀 = 2\n"):
        for kw in ({}, {"multiline": True}, {"num_beams": 2}):
            for c in eng.complete(prefix, suffix, max_new_tokens=10, **kw):
                c.text.encode("utf-8")  # a valid str: no lone surrogates, no half characters
                assert "\ufffd" not in c.text
    typed = eng.complete(prefix + "é", "")  # and typing after it reuses the cache without error
    assert all(isinstance(c.text, str) for c in typed)


@pytest.mark.parametrize(("provenance", "fim"), [({"fim_rate": 0.0}, False), ({}, True)])
def test_from_checkpoint(overfit_model: GPT, tok: Tokenizer, tmp_path: Path, provenance: dict, fim: bool) -> None:
    path = save_checkpoint(tmp_path / "best", overfit_model, tok, provenance)
    eng = CompletionEngine.from_checkpoint(path, device="cpu", threads=1)
    assert eng.fim is fim and eng.device.type == "cpu"
    got = eng.complete(DOC[:AFTER_DEF], "\n\nprint(1)\n", multiline=True)
    same_candidates(got, CompletionEngine(overfit_model, tok, fim=fim).complete(DOC[:AFTER_DEF], "\n\nprint(1)\n", multiline=True))
    assert eng.complete(DOC[:AFTER_DEF], "", multiline=True)[0].text == BODY



def test_copy_index_drops_suggestions_copied_from_training_code(tok: Tokenizer, overfit_model: GPT) -> None:
    import numpy as np

    from codecomplete.engine.copy_index import CopyIndex, line_hashes

    prefix = DOC[: DOC.index("    return os.path")]
    engine = CompletionEngine(overfit_model, tok, min_score=-1e9)
    assert engine.complete(prefix, "", n=1)[0].text == "    return os.path.join(root, *items)"
    training = CopyIndex.build([np.asarray(tok.encode(DOC))], line_hashes(DOC))
    engine.copy_index = training
    assert engine.complete(prefix, "", n=1) == []  # the line is a training line the model wrote
    engine.copy_index = CopyIndex.build([], line_hashes("    return os.path.join(root, *other_items)\n"))
    assert engine.complete(prefix, "", n=1)[0].text == "    return os.path.join(root, *items)"


def test_a_token_budget_beyond_the_context_is_capped_not_refused(tok: Tokenizer, overfit_model: GPT) -> None:
    engine = CompletionEngine(overfit_model, tok, min_score=-1e9)
    block = overfit_model.config.block_size
    assert engine.complete(DOC[:AFTER_DEF], "", n=1, max_new_tokens=block * 4, multiline=True)
    assert engine.stats.generated_tokens <= block // 2



def test_a_block_cut_at_the_line_limit_keeps_what_stands_on_its_own(overfit_model: GPT, tok: Tokenizer) -> None:
    eng = CompletionEngine(overfit_model, tok)
    # Three lines end at `for item in items:`, a header whose body the limit left out: it goes.
    assert eng.complete(DOC[:AFTER_DEF], "", multiline=True, max_lines=3)[0].text == "\n    total = 0"
    assert eng.complete(DOC[:AFTER_DEF], "", multiline=True, max_lines=4)[0].text == BODY[: BODY.index("\n    return")]


def test_clear_cache_answers_as_a_new_engine(random_model: GPT, tok: Tokenizer, code: list[str]) -> None:
    eng, prefix = CompletionEngine(random_model, tok), "".join(code[:4])
    eng.complete(prefix, "", n=1, max_new_tokens=2)
    typed = prefix + "    x = 1\n    y = 2\n"
    eng.complete(typed, "", n=1, max_new_tokens=2)
    kept = eng.stats.prompt_tokens  # the first cut, kept while typing
    eng.clear_cache()
    eng.complete(typed, "", n=1, max_new_tokens=2)
    new = CompletionEngine(random_model, tok)
    new.complete(typed, "", n=1, max_new_tokens=2)
    assert eng.stats.prompt_tokens == new.stats.prompt_tokens < kept
