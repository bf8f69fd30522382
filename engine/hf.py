"""Hugging Face model folders: Llama, Qwen2 and StarCoder2 checkpoints in, the same layouts out.

A folder holds config.json (with "model_type"), model.safetensors or the shards that
model.safetensors.index.json lists, and tokenizer.json. Its config maps onto GPTConfig's options,
and its weight names onto ours (q/k/v concatenated into c_attn, gate/up into c_fc); exporting
(train/export.py) runs the same table backwards. Nothing here imports transformers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as HFTokenizer

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPTConfig
from codecomplete.engine.tokenizer import Tokenizer

INDEX_FILE, TOKENIZER_CONFIG = "model.safetensors.index.json", "tokenizer_config.json"
SUPPORTED = "llama (Llama, CodeLlama, DeepSeek-Coder), qwen2 (Qwen2.5-Coder) or starcoder2 (StarCoder2)"
# Long-context models declare 16K-128K positions; the KV cache is preallocated to the context,
# so serving caps it (completion needs a few thousand tokens around the cursor), lower on a CPU,
# where prefilling 4K tokens of even a 0.5B model takes half a minute.
MAX_CONTEXT = 4096
SERVED_CONTEXT = {"cuda": MAX_CONTEXT, "mps": MAX_CONTEXT, "cpu": 2048}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "starcoder2": "Starcoder2ForCausalLM"}


def is_hf_config(config: Any) -> bool:
    return isinstance(config, dict) and "model_type" in config and "format_version" not in config


def weight_files(path: Path) -> list[Path]:
    """model.safetensors, or every shard the index lists; a one-line error for anything else."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CodecompleteError(f"{index} is not a valid shard index ({e}); download the model again") from e
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CodecompleteError(f"{path} lacks {missing[0]} (listed in {INDEX_FILE}); download the model again")
        return [path / n for n in names]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
    held = f"holds only {', '.join(found[:2])}, which is never loaded here," if found else "holds no model.safetensors"
    raise CodecompleteError(f"{path} {held}; download the model's safetensors weights "
                            f"(huggingface-cli download MODEL --include '*.safetensors' '*.json')")


def model_config(config: dict[str, Any], where: Path, max_context: int = MAX_CONTEXT) -> GPTConfig:
    """GPTConfig for a Hugging Face config.json; unsupported layouts are one line naming what is."""
    family = config.get("model_type")
    if family not in ARCHITECTURES:
        raise CodecompleteError(f"{where}: model_type {family!r} is not supported; use a {SUPPORTED} model")
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "?") if isinstance(config["quantization_config"], dict) else "?"
        raise CodecompleteError(f"{where}: quantised weights ({method}) are not supported; use the model's unquantised "
                                f"safetensors ({SUPPORTED})")
    starcoder = family == "starcoder2"
    try:
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}  # transformers 5 | earlier
        scaling = rope.get("rope_type") or rope.get("type") or "default"
        act = config.get("hidden_act", "gelu_pytorch_tanh" if starcoder else "silu")
        n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
        problem = (f"RoPE scaling {scaling!r}" if scaling not in ("default", "linear")
                   else f"activation {act!r}" if act != ("gelu_pytorch_tanh" if starcoder else "silu")
                   else "a head size other than hidden_size / num_attention_heads" if (config.get("head_dim") or n_embd // n_head) * n_head != n_embd
                   else "biases on a Llama's attention or MLP" if config.get("attention_bias") or config.get("mlp_bias")
                   else None)
        if problem:
            raise CodecompleteError(f"{where}: {problem} is not supported; use a standard {SUPPORTED} model")
        context = min(config.get("max_position_embeddings", max_context), max_context)
        if starcoder or config.get("use_sliding_window"):  # within its window, sliding-window attention is full attention
            context = min(context, config.get("sliding_window") or context)
        return GPTConfig(
            vocab_size=config["vocab_size"], block_size=context, n_layer=config["num_hidden_layers"], n_head=n_head,
            n_embd=n_embd, rope_theta=float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0),
            n_kv_head=config.get("num_key_value_heads") or n_head, mlp="gelu" if starcoder else "swiglu",
            intermediate_size=config["intermediate_size"], norm="layernorm" if starcoder else "rmsnorm",
            norm_eps=config.get("norm_epsilon", 1e-5) if starcoder else config.get("rms_norm_eps", 1e-6),
            bias=starcoder and config.get("use_bias", True), qkv_bias=family == "qwen2",
            tie_embeddings=config.get("tie_word_embeddings", starcoder),
            rope_scale=float(rope.get("factor", 1.0)) if scaling == "linear" else 1.0,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise CodecompleteError(f"{where}/config.json lacks or garbles {e}; download the model again") from e


def tokenizer(path: Path, config: dict[str, Any], settings: dict[str, Any]) -> Tokenizer:
    """tokenizer.json with the model's end-of-text token (config.json's eos_token_id) and, where
    tokenizer_config.json (settings) asks for one, its start token before every text."""
    tok = Tokenizer.from_file(path / "tokenizer.json")
    eos_id = config.get("eos_token_id")
    eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
    eos = tok.hf.id_to_token(eos_id) if isinstance(eos_id, int) else None
    token = settings.get("bos_token") if settings.get("add_bos_token") else None
    bos = token.get("content") if isinstance(token, dict) else token
    if eos in (None, tok.hf.id_to_token(tok.eot_id)) and bos is None:
        return tok
    return Tokenizer(HFTokenizer.from_str(tok.source), eos=eos, bos=bos)


def _parts(key: str, c: GPTConfig) -> list[tuple[str, int]]:
    """The Hugging Face tensors (name, rows) that are concatenated along dim 0 into our `key`."""
    module, _, kind = key.rpartition(".")
    top = {"transformer.wte": "model.embed_tokens", "transformer.ln_f": "model.norm", "lm_head": "lm_head"}
    if module in top:
        return [(f"{top[module]}.{kind}", -1)]
    _, _, layer, name = module.split(".", 3)  # transformer.h.3.attn.c_attn
    kv, hidden = c.kv_heads * c.head_size, c.intermediate_size or 4 * c.n_embd
    swiglu = c.mlp == "swiglu"
    parts = {
        "ln_1": [("input_layernorm", c.n_embd)],
        "ln_2": [("post_attention_layernorm", c.n_embd)],
        "attn.c_attn": [("self_attn.q_proj", c.n_embd), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv)],
        "attn.c_proj": [("self_attn.o_proj", c.n_embd)],
        "mlp.c_fc": [("mlp.gate_proj", hidden), ("mlp.up_proj", hidden)] if swiglu else [("mlp.c_fc", hidden)],
        "mlp.c_proj": [("mlp.down_proj" if swiglu else "mlp.c_proj", c.n_embd)],
    }[name]
    return [(f"model.layers.{layer}.{n}.{kind}", rows) for n, rows in parts]


def to_ours(hf_state: dict[str, torch.Tensor], keys: list[str], c: GPTConfig, where: Path) -> dict[str, torch.Tensor]:
    """Our state dict (for the model's keys) from a Hugging Face one, which it empties as it goes."""
    out = {}
    for key in keys:
        if key == "lm_head.weight" and c.tie_embeddings:
            hf_state.pop(key, None)  # some tied checkpoints store the copy too
            continue
        parts = _parts(key, c)
        missing = [n for n, _ in parts if n not in hf_state]
        if missing:
            raise CodecompleteError(f"{where} lacks the weight {missing[0]} that its config.json implies; download the model again")
        out[key] = torch.cat([hf_state.pop(n) for n, _ in parts]) if len(parts) > 1 else hf_state.pop(parts[0][0])
    unknown = [k for k in hf_state if not k.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise CodecompleteError(f"{where} holds weights this loader does not know ({', '.join(unknown[:3])}); "
                                f"use an unmodified {SUPPORTED} model")
    return out


def to_hf(state: dict[str, torch.Tensor], c: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict in Hugging Face names and shapes (the inverse of to_ours)."""
    out = {}
    for key, t in state.items():
        if key == "lm_head.weight" and c.tie_embeddings:
            continue
        parts = _parts(key, c)
        pieces = t.split([rows for _, rows in parts]) if len(parts) > 1 else [t]
        out |= {name: p.contiguous() for (name, _), p in zip(parts, pieces)}
    return out


def family_of(c: GPTConfig) -> str | None:
    """The transformers architecture that computes exactly what a GPTConfig does, if any."""
    if c.mlp == "swiglu" and c.norm == "rmsnorm" and not c.bias:
        return "qwen2" if c.qkv_bias else "llama"
    if c.mlp == "gelu" and c.norm == "layernorm" and c.bias:
        return "starcoder2"
    return None


def hf_config(c: GPTConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json for a GPTConfig that family_of() places."""
    family = family_of(c)
    assert family is not None
    starcoder = family == "starcoder2"
    # nn.RMSNorm without an eps uses the dtype's machine epsilon; in float32, this one.
    eps = c.norm_eps if c.norm_eps is not None else (1e-5 if starcoder else torch.finfo(torch.float32).eps)
    config = {
        "architectures": [ARCHITECTURES[family]], "model_type": family, "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd, "intermediate_size": c.intermediate_size or 4 * c.n_embd,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_size, "max_position_embeddings": c.block_size, "rope_theta": c.rope_theta,
        "rope_scaling": {"type": "linear", "rope_type": "linear", "factor": c.rope_scale} if c.rope_scale != 1 else None,
        "hidden_act": "gelu_pytorch_tanh" if starcoder else "silu", "norm_epsilon" if starcoder else "rms_norm_eps": eps,
        "tie_word_embeddings": c.tie_embeddings, "eos_token_id": tokenizer.eot_id,
        "bos_token_id": tokenizer.special_ids.get("bos", tokenizer.eot_id), "torch_dtype": "float32",
    }
    if family == "llama":
        config |= {"attention_bias": False, "mlp_bias": False}
    if starcoder:
        config |= {"use_bias": True, "sliding_window": None}
    return config
