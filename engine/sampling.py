"""Batched sampling with a KV cache: prefill the prompt once, decode n continuations together."""
from __future__ import annotations

import torch

from engine.model import GPT


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> scaled logits with the excluded tokens at -inf."""
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.inference_mode()
def generate(
    model: GPT,
    prompt_ids: list[int],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_p: float | None = 0.95,
    top_k: int | None = None,
    stop_ids: frozenset[int] = frozenset(),
    seed: int | None = None,
) -> list[list[int]]:
    """n continuations of prompt_ids; temperature 0 is greedy. Each stops at a stop id (excluded)."""
    device = model.transformer.wte.weight.device
    budget = model.config.block_size
    max_new_tokens = min(max_new_tokens, budget - 1)
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token (start files with end-of-text)")
    prompt_ids = prompt_ids[-(budget - max_new_tokens) :]
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    cache = model.new_cache(1, len(prompt_ids) + max_new_tokens)
    logits, _ = model(torch.tensor([prompt_ids], device=device), cache=cache, last_only=True)
    cache = cache.expand(n)
    logits = logits[:, -1].expand(n, -1)
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                if t in stop_ids:
                    done[i] = True
                else:
                    out[i].append(t)
        if bool(done.all()):
            break
        logits, _ = model(nxt.unsqueeze(-1), cache=cache)
        logits = logits[:, -1]
    return out
