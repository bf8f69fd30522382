"""A GPT-style decoder-only transformer: RoPE, RMSNorm, SDPA attention, tied embeddings, KV cache.

Read top to bottom: config and presets, the KV cache, attention, MLP, Block, GPT. One class for
every architecture served here: the config's options cover the Hugging Face families that
engine/hf.py imports (grouped-query attention, SwiGLU, LayerNorm, biases, untied embeddings),
and their defaults are this project's own model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

MLPS, NORMS = ("gelu", "swiglu"), ("rmsnorm", "layernorm")


@dataclass
class GPTConfig:
    vocab_size: int  # embedding rows: the tokenizer's size padded up to a multiple of 64
    block_size: int = 512  # longest context in tokens
    n_layer: int = 8
    n_head: int = 4
    n_embd: int = 256
    rope_theta: float = 10000.0
    dropout: float = 0.0
    n_kv_head: int | None = None  # grouped-query attention: key/value heads, each shared (None: n_head)
    mlp: str = "gelu"  # or "swiglu": Llama's gated MLP, down(silu(gate(x)) * up(x))
    intermediate_size: int | None = None  # the MLP's hidden width (None: 4 * n_embd)
    norm: str = "rmsnorm"  # or "layernorm" (StarCoder2)
    norm_eps: float | None = None  # None: RMSNorm's default, the machine epsilon of the dtype
    bias: bool = False  # biases on every linear layer but the output head (StarCoder2)
    qkv_bias: bool = False  # biases on the query/key/value projection only (Qwen2)
    tie_embeddings: bool = True  # the output head shares the token embedding's weights
    rope_scale: float = 1.0  # linear RoPE scaling (DeepSeek-Coder): positions are divided by it

    def __post_init__(self) -> None:
        if self.mlp not in MLPS or self.norm not in NORMS:
            raise ValueError(f"mlp must be one of {MLPS} and norm one of {NORMS}, not {self.mlp!r} and {self.norm!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


# Shapes only; the vocab size always comes from the tokenizer (see padded_vocab_size).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=128),  # tests
    "mini": dict(n_layer=6, n_head=6, n_embd=192, block_size=512),  # ~5.6M params: fast CPU completions
    "small": dict(n_layer=8, n_head=4, n_embd=256, block_size=512),  # ~10M params, CPU-trainable
    "base": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),  # ~100M, one GPU
    "large": dict(n_layer=24, n_head=16, n_embd=1024, block_size=2048),  # ~350M
}


def padded_vocab_size(tokenizer_vocab_size: int, multiple: int = 64) -> int:
    return (tokenizer_vocab_size + multiple - 1) // multiple * multiple


def config_from_preset(preset: str, tokenizer_vocab_size: int, mlp: str = "gelu", **overrides: int) -> GPTConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = {**PRESETS[preset], **overrides}
    if mlp == "swiglu":  # three matrices instead of two: 2/3 of the width keeps the parameter count (Llama)
        shape.setdefault("intermediate_size", padded_vocab_size(8 * shape["n_embd"] // 3))
    return GPTConfig(vocab_size=padded_vocab_size(tokenizer_vocab_size), mlp=mlp, **shape)


class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to max_len.

    Positions from pos on are never read before a token's keys and values are written there, so
    the memory starts uninitialised and copies stop at pos.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (config.n_layer, batch_size, config.kv_heads, max_len, config.head_size)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0  # tokens already stored

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(2)
        self.k[layer, :, :, self.pos : self.pos + t] = k
        self.v[layer, :, :, self.pos : self.pos + t] = v
        end = self.pos + t
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache holding the given rows (beam search reorders; repeats are allowed)."""
        out = KVCache.__new__(KVCache)
        out.k, out.v, out.pos = self.k.index_select(1, rows), self.v.index_select(1, rows), self.pos
        return out

    def expand(self, batch_size: int) -> KVCache:
        """Copy a one-row cache into batch_size rows (prefill once, decode n candidates)."""
        out = KVCache.__new__(KVCache)
        out.pos = self.pos
        out.k, out.v = (t.new_empty(t.shape[:1] + (batch_size,) + t.shape[2:]) for t in (self.k, self.v))
        for new, old in ((out.k, self.k), (out.v, self.v)):
            new[:, :, :, : self.pos] = old[:, :, :, : self.pos]  # broadcast over the rows
        return out

    def truncate(self, length: int) -> None:
        """Forget positions from length on; later appends overwrite them."""
        self.pos = min(self.pos, length)


def rope_tables(seq_len: int, head_size: int, theta: float, scale: float = 1.0,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float32, device=device) / head_size))
    positions = torch.arange(seq_len, dtype=torch.float32, device=device) / scale
    angles = torch.outer(positions, inv_freq)  # (T, hs/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)  # (T, hs): laid out for apply_rope


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, heads, hs); rotate pairs (first half x1, second half x2) by position-dependent angles:
    # (x1 cos - x2 sin, x2 cos + x1 sin), with the signs and halves already in the tables
    x = x.float()
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, x1), dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0 and config.n_head % config.kv_heads == 0
        self.n_head, self.n_kv_head, self.hs = config.n_head, config.kv_heads, config.head_size
        kv = self.n_kv_head * self.hs
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv, bias=config.bias or config.qkv_bias)  # q | k | v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None, layer: int,
                mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.size()
        qkv = self.c_attn(x).view(B, T, self.n_head + 2 * self.n_kv_head, self.hs)  # heads: q | k | v
        qk = apply_rope(qkv[:, :, : self.n_head + self.n_kv_head], cos, sin).type_as(x)  # one rotation for q and k
        q = qk[:, :, : self.n_head].transpose(1, 2)  # (B, nh, T, hs)
        k = qk[:, :, self.n_head :].transpose(1, 2)  # (B, nkv, T, hs)
        v = qkv[:, :, self.n_head + self.n_kv_head :].transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.append(layer, k, v)  # (B, nkv, past+T, hs)
        dropout = self.dropout if self.training else 0.0
        rep = self.n_head // self.n_kv_head  # each key/value head serves a run of rep query heads
        if rep > 1 and T == 1:  # decoding: a run's queries attend as rows of one sequence, so the cache is not copied
            y = F.scaled_dot_product_attention(q.reshape(B, self.n_kv_head, rep, self.hs), k, v, dropout_p=dropout)
            return self.c_proj(y.reshape(B, T, C))
        if rep > 1:
            k, v = (t.repeat_interleave(rep, dim=1) for t in (k, v))
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:  # one new token sees everything; more see the cache and the causal part of themselves
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.intermediate_size or 4 * config.n_embd
        self.swiglu = config.mlp == "swiglu"
        self.c_fc = nn.Linear(config.n_embd, (2 if self.swiglu else 1) * hidden, bias=config.bias)  # swiglu: gate | up
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.c_proj(F.silu(gate) * up)
        return self.c_proj(F.gelu(h, approximate="tanh"))


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps or 1e-5)
    return nn.RMSNorm(config.n_embd, eps=config.norm_eps)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None, layer: int,
                mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin, cache, layer, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        # On the CPU even when built on the meta device (engine.checkpoint loads weights that way).
        cos, sin = rope_tables(config.block_size, config.head_size, config.rope_theta, config.rope_scale, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab); loss when targets (B, T) are given.

        With a cache, idx holds only the new tokens; their positions continue after cache.pos.
        last_only skips the vocab projection of all but the last position (prefill for decoding).
        """
        x = self.hidden(idx, cache)
        logits = self.head(x[:, -1:] if last_only else x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> (B, T, C) final states, for head() to project: decoding projects
        only the positions it reads (a draft is read up to its first wrong token)."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        cos, sin = self.rope_cos[start : start + T, None], self.rope_sin[start : start + T, None]  # (T, 1, hs)
        mask = None  # new tokens after cached ones see those and the causal part of themselves (bottom-right aligned)
        if start and T > 1:
            mask = torch.ones(T, start + T, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        x = self.transformer.drop(self.transformer.wte(idx))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) final states -> (..., vocab) logits."""
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return x @ self._head_t()
        return self.lm_head(x)

    def _head_t(self) -> torch.Tensor:
        """The output projection as a contiguous (C, vocab) copy, rebuilt when the weights change.

        Decoding multiplies a few rows by it; on CPU, MKL does that ~3x faster in this layout than
        in F.linear's (vocab, C) one, and it is a third of a decoding step.
        """
        w = self.lm_head.weight
        key = (w.data_ptr(), w._version, w.dtype)
        if getattr(self, "_head_t_key", None) != key:
            self._head_t_cache, self._head_t_key = w.detach().t().contiguous(), key
        return self._head_t_cache

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.transformer.wte.weight
        return KVCache(self.config, batch_size, max_len or self.config.block_size, p.device, p.dtype)

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward): 6N plus attention (PaLM appendix B)."""
        c = self.config
        n = self.num_params()
        return 6 * n + 12 * c.n_layer * c.n_embd * c.block_size
