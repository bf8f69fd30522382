"""The model on a tiny random GPT: KV-cache parity, overfitting, presets, logit filters."""

from __future__ import annotations

import pytest
import torch

from codecomplete.engine.decoding import filter_logits
from codecomplete.engine.model import GPT, PRESETS, config_from_preset, padded_vocab_size

TOKENIZER_VOCAB = 300




@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", TOKENIZER_VOCAB)).eval()
    with torch.no_grad():
        # At GPT-2 init the (tied) token embedding dominates and greedy repeats the last token;
        # larger block weights make continuations vary, which the decoding tests need.
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "transformer.wte.weight":
                p.normal_(0.0, 0.2)
    return model


def random_ids(n: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TOKENIZER_VOCAB, (batch, n), generator=g)


# --- KV cache -----------------------------------------------------------------------------


@torch.no_grad()
def test_cached_decoding_matches_full_forward(model: GPT) -> None:
    idx = random_ids(40, batch=2)
    full, _ = model(idx)  # (B, T, V)

    cache = model.new_cache(2)
    prefill, _ = model(idx[:, :10], cache=cache)
    steps = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(10, 40)]
    stepped = torch.cat([prefill, *steps], dim=1)
    assert cache.pos == 40
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)

    cache = model.new_cache(2, max_len=40)
    chunks = [model(idx[:, a:b], cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 21), (21, 40)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)

    last, _ = model(idx, last_only=True)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=0)


@torch.no_grad()
def test_expanded_cache_rows_decode_like_separate_runs(model: GPT) -> None:
    prompt = random_ids(9, seed=3)
    cache = model.new_cache(1, max_len=16)
    model(prompt, cache=cache)
    rows = cache.expand(4)
    assert rows.pos == 9 and rows.k.size(1) == 4

    same, _ = model(torch.full((4, 1), 17), cache=rows)
    assert all(torch.equal(same[0], same[i]) for i in range(1, 4))

    # rows are independent copies: different tokens now give each row its own uncached result
    nxt = torch.tensor([[5], [6], [7], [8]])
    logits, _ = model(nxt, cache=rows)
    for i in range(4):
        seq = torch.cat([prompt[0], torch.tensor([17, 5 + i])]).unsqueeze(0)
        full, _ = model(seq)
        torch.testing.assert_close(logits[i, -1], full[0, -1], atol=1e-5, rtol=0)


def test_sequence_longer_than_block_size_is_refused(model: GPT) -> None:
    block = model.config.block_size
    model(random_ids(block))  # exactly block_size is fine
    with pytest.raises(ValueError, match="block_size"):
        model(random_ids(block + 1))
    cache = model.new_cache(1)
    model(random_ids(block - 2), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(random_ids(3), cache=cache)


# --- training -----------------------------------------------------------------------------


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", TOKENIZER_VOCAB)).train()
    data = random_ids(33, seed=4, batch=4)
    x, y = data[:, :-1], data[:, 1:]  # (4, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    _, first = model(x, y)
    assert abs(first.item() - torch.log(torch.tensor(float(model.config.vocab_size))).item()) < 0.5
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_targets_of_minus_one_are_ignored(model: GPT) -> None:
    x = random_ids(8, seed=5)
    y = random_ids(8, seed=6)
    _, loss = model(x, y)
    masked = y.clone()
    masked[:, 4:] = -1
    _, part = model(x, masked)
    _, first_half = model(x[:, :4], y[:, :4])
    assert not torch.isclose(loss, part)
    torch.testing.assert_close(part, first_half)


def test_inference_logits_equal_training_logits_and_follow_weight_updates() -> None:
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", 320))
    x = torch.randint(0, 320, (2, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # the transposed head copy must be rebuilt after each in-place update
        with torch.no_grad():
            fast, _ = model(x)
        slow, loss = model(x, x)
        torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        assert not torch.allclose(model(x)[0], fast)


# --- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, millions", [("mini", 6), ("small", 10), ("base", 100), ("large", 350)])
def test_preset_sizes(preset: str, millions: int) -> None:
    with torch.device("meta"):
        model = GPT(config_from_preset(preset, 16384))
    assert 0.75 * millions < model.num_params() / 1e6 < 1.25 * millions


@pytest.mark.parametrize("vocab", [1, 63, 64, 65, 300, 16384, 50257])
def test_vocab_is_padded_to_a_multiple_of_64(vocab: int) -> None:
    config = config_from_preset("tiny", vocab)
    assert config.vocab_size % 64 == 0
    assert vocab <= config.vocab_size < vocab + 64
    assert padded_vocab_size(vocab) == config.vocab_size


def test_presets_and_overrides() -> None:
    config = config_from_preset("tiny", 300, n_layer=3)
    assert config.n_layer == 3 and config.n_embd == PRESETS["tiny"]["n_embd"]
    assert PRESETS["tiny"]["n_layer"] != 3  # the override did not leak into the preset
    with pytest.raises(ValueError, match="tiny"):
        config_from_preset("huge", 300)


# --- logit filters -------------------------------------------------------------------------


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])

    def kept(out: torch.Tensor) -> list[int]:
        return torch.isfinite(out[0]).nonzero().flatten().tolist()

    assert kept(filter_logits(logits, 1.0, top_k=2)) == [0, 1]
    assert kept(filter_logits(logits, 1.0, top_p=1e-9)) == [0]
    p = logits.softmax(-1)[0]
    assert kept(filter_logits(logits, 1.0, top_p=float(p[0] + p[1]) - 1e-4)) == [0, 1]
    assert kept(filter_logits(logits, 1.0, top_p=float(p[0] + p[1]) + 1e-4)) == [0, 1, 2]
    assert kept(filter_logits(logits, 1.0)) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(filter_logits(logits, 0.5), logits * 2)
