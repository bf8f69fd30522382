"""Completion latency: our engine vs Hugging Face `generate()` on a GPT-2 of the same shape, or,
for a Hugging Face model folder, on transformers' own implementation of the same weights.

Scenarios, each over cursor positions in real Python files (this Python's standard library):
  cold    a newly opened file: ~1,000 tokens of context before the cursor, nothing cached
  typing  the user types the rest of the line one character at a time (prefix cache warm)
The peer gets the same prompt ids and produces 3 sequences of --new-tokens tokens with
`generate()`; ours returns 3 ranked single-line candidates and stops each at end of line.
Ours runs twice, request by request: with drafts (the default) and with a token per pass
(--draft-tokens 0), so the figures show what the drafts give; both return the same candidates.
Last comes where the time of a decoding pass goes (a profile of the engine's own steps, then of
the operations inside the model).

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
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from codecomplete.engine.checkpoint import load_checkpoint, read_config
from codecomplete.engine.completion import DTYPES, CompletionEngine
from codecomplete.engine.decoding import DRAFT_TOKENS
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


class Run:
    """One engine's figures over the scenarios: latencies, and what its decoder drafted."""

    def __init__(self, engine: CompletionEngine) -> None:
        self.engine = engine
        self.cold: list[float] = []
        self.typing: list[float] = []
        self.decoded: list[float] = []  # the keystrokes that needed the model
        self.shortcut = 0
        self.tokens = Counter()  # generated, accepted from drafts, passes: cold and decoded keystrokes together

    def complete(self, prefix: str, suffix: str, opts: dict, into: list[float]) -> None:
        self.engine.complete(prefix, suffix, **opts)
        s = self.engine.stats
        into.append(s.latency_ms)
        if not s.from_earlier_answer:
            d = self.engine.decoder.stats
            self.tokens.update(generated=s.generated_tokens, accepted=d.accepted, passes=d.passes, drafted=d.drafted)

    def report(self, name: str) -> None:
        print(f"{name} cold    {percentiles(self.cold)}")
        print(f"{name} typing  {percentiles(self.typing)}   ({self.shortcut}/{len(self.typing)} answered from the earlier result)")
        if self.decoded:
            print(f"  decoded    {percentiles(self.decoded)}   (the keystrokes that needed the model)")
        t = self.tokens
        if t["drafted"]:
            print(f"  drafts: {t['accepted']} of {t['generated']} generated tokens ({t['accepted'] / max(t['generated'], 1):.0%}) "
                  f"were accepted from drafts ({t['accepted'] / t['drafted']:.0%} of {t['drafted']} drafted); "
                  f"{t['passes']} forward passes")
        else:
            print(f"  {t['passes']} forward passes for {t['generated']} generated tokens")


def timed(into: Counter, key: str, fn: Callable) -> Callable:
    def wrapper(*args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        into[key] += time.perf_counter() - t0
        into[key + " calls"] += 1
        return out

    return wrapper


def step_profile(engine: CompletionEngine, cases: list[tuple[str, str, str]], opts: dict) -> None:
    """Where a decoding pass's time goes: the engine's parts over the cold cases, then the
    operations inside one typical pass of the model."""
    spent, widths, rows = Counter(), Counter(), opts["n"]
    model, decoder = engine.model, engine.decoder

    def blocks(idx: torch.Tensor, cache=None) -> torch.Tensor:
        if idx.size(0) == rows:  # a decoding pass, not a prefill
            widths[idx.size(1)] += 1
            return timed(spent, "blocks", type(model).hidden)(model, idx, cache)
        return timed(spent, "prefill", type(model).hidden)(model, idx, cache)

    def head(x: torch.Tensor) -> torch.Tensor:  # a prefill projects (1, 1, C); a pass its positions (P, C)
        return timed(spent, "head" if x.dim() == 2 else "prefill", type(model).head)(model, x)

    model.hidden, model.head = blocks, head
    for name in ("choose", "push", "draft"):
        setattr(decoder, name, timed(spent, name, getattr(decoder, name)))
    try:
        for prefix, _, suffix in cases:
            engine.clear_cache()
            engine.complete(prefix, suffix, **opts)
            spent["complete"] += engine.stats.latency_ms / 1000
    finally:
        for name in ("hidden", "head"):
            delattr(model, name)
        for name in ("choose", "push", "draft"):
            delattr(decoder, name)
    passes = spent["blocks calls"]
    if not passes:
        return
    width = sum(w * k for w, k in widths.items()) / passes
    print(f"\nwhere the time goes (cold, {len(cases)} completions, {passes / len(cases):.1f} decoding passes each, "
          f"{width:.1f} tokens fed per row and pass):")
    per_pass = {
        "blocks (the model up to its last norm)": spent["blocks"],
        "vocabulary projection of the positions read": spent["head"],
        "choosing: caches mixed in, healing masks, argmax/sampling": spent["choose"],
        "stop rules and bookkeeping": spent["push"],
        "drafting": spent["draft"],
    }
    total = sum(per_pass.values())
    for name, s in per_pass.items():
        print(f"  {name:58s} {s / passes * 1000:6.2f} ms per pass  {s / total:4.0%}")
    print(f"  {'the prompt (prefill), per completion':58s} {spent['prefill'] / len(cases) * 1000:6.2f} ms")
    rest = spent["complete"] - total - spent["prefill"]
    print(f"  {'the rest (prompt building, tokenizing, ranking), per completion':58s} {rest / len(cases) * 1000:6.2f} ms")
    model_profile(model, rows, max(1, round(width)), engine.stats.prompt_tokens)


@torch.inference_mode()
def model_profile(model: GPT, rows: int, width: int, cached: int, repeats: int = 30) -> None:
    """The operations inside one pass of `rows` x `width` new tokens after `cached` ones."""
    device = model.transformer.wte.weight.device
    cache = model.new_cache(1)
    model.hidden(torch.zeros(1, cached, dtype=torch.long, device=device), cache)
    cache = cache.expand(rows)
    x = torch.zeros(rows, width, dtype=torch.long, device=device)
    for _ in range(3):
        cache.truncate(cached)
        model.hidden(x, cache)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(repeats):
            cache.truncate(cached)
            model.hidden(x, cache)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / repeats
    kinds = Counter()
    for e in prof.events():
        if e.cpu_parent is None and e.name.startswith("aten::"):  # top-level operations, their children inside
            name = e.name
            kind = ("matmuls" if any(k in name for k in ("mm", "matmul", "linear")) else
                    "attention" if "attention" in name else "norms" if "norm" in name else "other operations")
            kinds[kind] += e.cpu_time_total / 1e6 / repeats
    kinds["Python and dispatch between operations"] = max(0.0, wall - sum(kinds.values()))
    parts = ", ".join(f"{k} {v * 1000:.2f}" for k, v in kinds.most_common())
    print(f"  one pass through the blocks, {rows} rows x {width} tokens after {cached}: {wall * 1000:.2f} ms = {parts} (ms)")


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
    ap.add_argument("--draft-tokens", type=int, default=DRAFT_TOKENS, help="draft tokens verified per pass (0: measure once, without)")
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
    # No floor: every request decodes in full. Ours with drafts, and (when drafting) with a token per pass.
    runs = [Run(CompletionEngine(model, tok, min_score=-1e9, draft_tokens=k)) for k in dict.fromkeys((args.draft_tokens, 0))]
    opts = dict(n=3, max_new_tokens=args.new_tokens)
    cases = cursor_cases(args.cases, args.seed)
    for run in runs:
        run.engine.complete(cases[0][0], cases[0][2], **opts)  # warm up kernels once

    peer_ms, prompt_lens, generated = [], [], []
    for prefix, typed, suffix in cases:
        for run in runs:
            run.engine.clear_cache()
            run.complete(prefix, suffix, opts, run.cold)
        prompt_lens.append(runs[0].engine.stats.prompt_tokens)
        generated.append(runs[0].engine.stats.generated_tokens / 3)
        for k in range(1, args.keystrokes + 1):
            for run in runs:
                run.complete(prefix + typed[:k], suffix, opts, run.typing)
                run.shortcut += run.engine.stats.from_earlier_answer
                if not run.engine.stats.from_earlier_answer:
                    run.decoded.append(run.typing[-1])
        if peer is not None:
            ids = build_prompt(tok, prefix, suffix, model.config.block_size - args.new_tokens, runs[0].engine.fim).ids
            peer_ms.append(peer_latency(peer, ids, 3, args.new_tokens))

    print(f"prompt tokens: mean {statistics.mean(prompt_lens):.0f}; generated per candidate: mean {statistics.mean(generated):.1f} (cap {args.new_tokens})")
    for run, name in zip(runs, ("ours", "ours, a token per pass")):
        run.report(name)
    ours = runs[0]
    if peer_ms:
        print(f"peer cold    {percentiles(peer_ms)}   (HF generate, 3 x {args.new_tokens} tokens)")
        decoded = f", typing (decoded keystrokes) {statistics.median(peer_ms) / statistics.median(ours.decoded):.1f}x" if ours.decoded else ""
        print(f"ratio peer/ours p50: cold {statistics.median(peer_ms) / statistics.median(ours.cold):.1f}x{decoded}")
    step_profile(ours.engine, cases, opts)


if __name__ == "__main__":
    main()
