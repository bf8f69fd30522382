"""Completion latency: our engine vs Hugging Face `generate()` on a GPT-2 of the same shape, or,
for a Hugging Face model folder, on transformers' own implementation of the same weights.

Scenarios, each over cursor positions in real Python files (this Python's standard library):
  cold    a newly opened file: ~1,000 tokens of context before the cursor, nothing cached
  typing  the user types the rest of the line one character at a time (prefix cache warm)
The peer gets the same prompt ids and produces 3 sequences of --new-tokens tokens with
`generate()`; ours returns 3 ranked single-line candidates and stops each at end of line.

    python benchmarks/latency.py                          # small preset, random weights
    python benchmarks/latency.py --checkpoint runs/small/best
    python benchmarks/latency.py --checkpoint ~/models/Qwen2.5-Coder-0.5B   # a Hugging Face folder
"""
from __future__ import annotations

import argparse
import random
import statistics
import sysconfig
import time
from pathlib import Path

import torch

from codecomplete.engine.checkpoint import load_checkpoint, read_config
from codecomplete.engine.completion import DTYPES, CompletionEngine
from codecomplete.engine.device import pick_device
from codecomplete.engine.hf import SERVED_CONTEXT, is_hf_config
from codecomplete.engine.model import GPT, config_from_preset
from codecomplete.engine.prompt import build_prompt


def percentiles(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20) if len(ms) > 1 else ms * 19
    return f"p50 {statistics.median(ms):7.1f} ms   p95 {q[18]:7.1f} ms   (n={len(ms)})"


def cursor_cases(n: int, seed: int, min_prefix_chars: int = 4000) -> list[tuple[str, str, str]]:
    """(prefix, rest of the line, suffix): the cursor inside a random line of a large stdlib file.

    The rest of the line is what the user is about to type, so it is not in the suffix: typing
    inserts it character by character while the text after the cursor stays the same.
    """
    rng = random.Random(seed)
    files = sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).glob("*.py") if 20_000 < p.stat().st_size < 200_000)
    cases = []
    while len(cases) < n:
        text = rng.choice(files).read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines) // 3, len(lines) - 1)
        before = "".join(lines[:i])
        if len(before) < min_prefix_chars or not lines[i].strip():
            continue
        line = lines[i].rstrip("\n")
        cut = len(line) - len(line.lstrip()) + rng.randrange(0, max(1, len(line.strip()) // 2))
        cases.append((before[-min_prefix_chars:] + line[:cut], line[cut:], "\n" + "".join(lines[i + 1 : i + 40])))
    return cases


def make_peer(model: GPT, hf_folder: Path | None):
    try:
        from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
    except ImportError:
        print("transformers is not installed (pip install -e '.[bench]'): measuring ours alone")
        return None
    device = model.transformer.wte.weight.device
    if hf_folder is not None:
        peer = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=model.transformer.wte.weight.dtype, attn_implementation="sdpa")
        return peer.eval().to(device)
    c = model.config
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                     attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg).eval().to(device)


@torch.inference_mode()
def peer_latency(peer, ids: list[int], n: int, new_tokens: int) -> float:
    x = torch.tensor([ids], device=peer.device)
    t0 = time.perf_counter()
    peer.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                  num_return_sequences=n, pad_token_id=0)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: random small model + a tokenizer from --tokenizer)")
    ap.add_argument("--tokenizer", type=Path, default=Path("models/default/tokenizer.json"), help="tokenizer.json for the random model")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--keystrokes", type=int, default=8, help="characters typed per case in the typing scenario")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    hf_folder = args.checkpoint if args.checkpoint and is_hf_config(read_config(args.checkpoint)) else None
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint, device, DTYPES[device.type], SERVED_CONTEXT[device.type])  # as the server loads it
        model, tok = ckpt.model, ckpt.tokenizer
    else:
        from codecomplete.engine.tokenizer import Tokenizer

        tok = Tokenizer.from_file(args.tokenizer)
        torch.manual_seed(args.seed)
        model = GPT(config_from_preset(args.preset, tok.vocab_size)).to(device).eval()
    print(f"torch {torch.__version__} | {device} | threads {torch.get_num_threads()} | {model.num_params() / 1e6:.1f}M params, "
          f"block {model.config.block_size} | {'trained' if args.checkpoint else 'random'} weights"
          f"{' | Hugging Face ' + read_config(hf_folder)['model_type'] if hf_folder else ''}")
    peer = make_peer(model, hf_folder)
    engine = CompletionEngine(model, tok, min_score=-1e9)  # no floor: every request decodes in full
    opts = dict(n=3, max_new_tokens=args.new_tokens)
    cases = cursor_cases(args.cases, args.seed)
    engine.complete(cases[0][0], cases[0][2], **opts)  # warm up kernels once

    cold, typing, typing_decoded, peer_ms, prompt_lens, generated, shortcut = [], [], [], [], [], [], 0
    for prefix, typed, suffix in cases:
        engine.clear_cache()
        engine.complete(prefix, suffix, **opts)
        cold.append(engine.stats.latency_ms)
        prompt_lens.append(engine.stats.prompt_tokens)
        generated.append(engine.stats.generated_tokens / 3)
        for k in range(1, args.keystrokes + 1):
            engine.complete(prefix + typed[:k], suffix, **opts)
            typing.append(engine.stats.latency_ms)
            shortcut += engine.stats.from_earlier_answer
            if not engine.stats.from_earlier_answer:
                typing_decoded.append(engine.stats.latency_ms)
        if peer is not None:
            ids = build_prompt(tok, prefix, suffix, model.config.block_size - args.new_tokens, engine.fim).ids
            peer_ms.append(peer_latency(peer, ids, 3, args.new_tokens))

    print(f"prompt tokens: mean {statistics.mean(prompt_lens):.0f}; generated per candidate: mean {statistics.mean(generated):.1f} (cap {args.new_tokens})")
    print(f"ours cold    {percentiles(cold)}")
    print(f"ours typing  {percentiles(typing)}   ({shortcut}/{len(typing)} answered from the earlier result)")
    if typing_decoded:
        print(f"  decoded    {percentiles(typing_decoded)}   (the keystrokes that needed the model)")
    if peer_ms:
        print(f"peer cold    {percentiles(peer_ms)}   (HF generate, 3 x {args.new_tokens} tokens)")
        decoded = f", typing (decoded keystrokes) {statistics.median(peer_ms) / statistics.median(typing_decoded):.1f}x" if typing_decoded else ""
        print(f"ratio peer/ours p50: cold {statistics.median(peer_ms) / statistics.median(cold):.1f}x{decoded}")


if __name__ == "__main__":
    main()
