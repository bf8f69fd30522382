"""Training-step throughput of our GPT next to a same-shape Hugging Face GPT-2, per preset.

One step = forward + backward + AdamW step on a fixed random batch. Both models get the same
optimizer (train.loop.make_optimizer), batch, sequence length and autocast rule, in the same run,
so the ours/peer ratio is meaningful even on a noisy machine. Usage:

    python benchmarks/train_throughput.py        # tiny,small on CPU; small,base,large on CUDA
    python benchmarks/train_throughput.py --presets base --steps 50 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from codecomplete.engine.device import DEVICE_CHOICES, pick_device
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT, PRESETS, config_from_preset
from codecomplete.train.loop import TrainConfig, make_optimizer

# Dense bf16 tensor-core peaks (TFLOPS); matched as substrings of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
# Tokens per step when --batch-size is not given: small enough for a 2-core CPU to finish in
# minutes, large enough on a GPU that kernel-launch overhead does not dominate.
DEFAULT_TOKENS_PER_STEP = {"cpu": 1024, "mps": 8192, "cuda": 16384}


def sync(device: torch.device) -> None:
    # GPU kernels are asynchronous: without a sync the timer would only measure the launches.
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def build_peer(n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int) -> Any:
    """HF GPT-2 of our shape with random weights (nothing downloaded); None without transformers."""
    try:
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()  # chatter about GPT-2's token ids and loss type
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                     attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg)


def time_steps(runs: list[tuple[torch.nn.Module, Any]], device: torch.device, steps: int,
               warmup: int) -> list[float]:
    """Median seconds of a forward + backward + AdamW step per model, after `warmup` untimed ones.

    The models take turns step by step, so load from other processes (or GPU clock changes) hits
    both alike instead of skewing whichever happened to run second.
    """
    # The Trainer's rule: bf16 autocast on CUDA, plain fp32 elsewhere.
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    # The Trainer's optimizer for both (fused on CUDA; decay on matrices, not on norms/biases).
    cfg = TrainConfig(data="", out="")
    opts = [make_optimizer(m, cfg, device) for m, _ in runs]  # type: ignore[arg-type]
    times: list[list[float]] = [[] for _ in runs]
    for i in range(warmup + steps):
        for (model, step_loss), opt, ts in zip(runs, opts, times):
            model.train()
            sync(device)
            t0 = time.perf_counter()
            with autocast:
                loss = step_loss(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            if i >= warmup:  # warmup absorbs allocator growth, SDPA kernel selection, lazy init
                ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None  # no honest CPU/MPS peak to divide by
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def bench_preset(preset: str, args: argparse.Namespace, device: torch.device,
                 peak: float | None) -> list[dict[str, Any]]:
    shape = PRESETS[preset]
    seq = min(args.seq_len or shape["block_size"], args.max_seq_len)
    batch = args.batch_size or max(1, DEFAULT_TOKENS_PER_STEP[device.type] // seq)
    # Our block_size follows the benchmarked length so flops_per_token()'s attention term (which
    # uses block_size) counts the attention actually computed; the peer gets n_positions to match.
    torch.manual_seed(0)
    ours = GPT(config_from_preset(preset, args.vocab_size, block_size=seq)).to(device)
    cfg = ours.config
    flops_per_token = ours.flops_per_token()  # one formula for both models: the ratio stays fair
    x = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    models: list[tuple[str, torch.nn.Module, Any]] = [("ours", ours, lambda m: m(inp, tgt)[1])]
    peer = build_peer(cfg.n_layer, cfg.n_head, cfg.n_embd, seq, cfg.vocab_size)
    if peer is not None:
        # HF shifts labels itself, so labels=inputs predicts the same next tokens as (inp, tgt).
        models.append(("hf-gpt2", peer.to(device), lambda m: m(input_ids=inp, labels=inp).loss))

    runs = [(model, step_loss) for _, model, step_loss in models]
    rows = []
    for (name, model, _), sec in zip(models, time_steps(runs, device, args.steps, args.warmup)):
        tok_s = batch * seq / sec
        tflops = tok_s * flops_per_token / 1e12
        rows.append({
            "preset": preset, "model": name, "batch_size": batch, "seq_len": seq,
            "params": sum(p.numel() for p in model.parameters()),  # tied weights counted once
            "step_s": sec, "tokens_per_s": tok_s, "tflops": tflops,
            "mfu": tflops / peak if peak else None,
        })
    if len(rows) == 2:
        rows[0]["ours_over_peer"] = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'preset':<7} {'model':<8} {'batch x seq':>11} {'params(M)':>9} {'tok/s':>10} " \
           f"{'TFLOPS':>7} {'MFU':>6} {'ours/peer':>9}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        ratio = f"{r['ours_over_peer']:.2f}x" if "ours_over_peer" in r else ""
        bxs = f"{r['batch_size']}x{r['seq_len']}"
        print(f"{r['preset']:<7} {r['model']:<8} {bxs:>11} {r['params'] / 1e6:>9.2f} "
              f"{r['tokens_per_s']:>10,.0f} {r['tflops']:>7.3f} {mfu:>6} {ratio:>9}".rstrip())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", help="comma-separated (default tiny,small; CUDA: small,base,large)")
    p.add_argument("--batch-size", type=int, help="default: a per-device token budget / seq len")
    p.add_argument("--seq-len", type=int, help="default: the preset's block_size")
    p.add_argument("--max-seq-len", type=int, default=2048, help="cap on the sequence length")
    p.add_argument("--steps", type=int, help="timed steps (median taken); default 5 CPU, 20 GPU")
    p.add_argument("--warmup", type=int, help="untimed steps first; default 1 CPU, 5 GPU")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--vocab-size", type=int, default=16384)
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default: known GPUs)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    try:
        device = pick_device(args.device)
    except CodecompleteError as e:  # e.g. --device cuda on a machine without one: one line, no trace
        p.error(str(e))
    on_gpu = device.type != "cpu"
    args.steps = args.steps if args.steps is not None else (20 if on_gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be at least 1 and --warmup at least 0")
    default_presets = "small,base,large" if device.type == "cuda" else "tiny,small"
    presets = (args.presets or default_presets).split(",")
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    name = torch.cuda.get_device_name() if device.type == "cuda" else device.type
    peak = peak_tflops(device, args.peak_tflops)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"torch {torch.__version__} | device {name} | threads {torch.get_num_threads()} | "
          f"{precision} | peak {f'{peak:g} TFLOPS' if peak else 'unknown'} | "
          f"warmup {args.warmup}, median of {args.steps} steps")
    try:
        import transformers
        print(f"peer: transformers {transformers.__version__} GPT2LMHeadModel, sdpa, random init")
    except ImportError:
        print("note: transformers not installed (pip install -e '.[bench]'); measuring ours alone")

    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for preset in presets:
        rows += bench_preset(preset, args, device, peak)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # hand the last preset's memory back before a larger one
    print()
    print_table(rows)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; "
          "TFLOPS = tok/s x our model's flops_per_token(), for both models")
    if args.json:
        meta = {"torch": torch.__version__, "device": name, "threads": torch.get_num_threads(),
                "peak_tflops": peak, "steps": args.steps, "warmup": args.warmup}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
