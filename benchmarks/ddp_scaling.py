"""Data-parallel scaling: training tokens/s with 1 and 2 torchrun processes, same effective batch.

Runs the real `codecomplete-train train` under `torchrun --standalone --nproc_per_node N` on the
same data and config (grad_accum 2: one process takes both micro-batches, two take one each),
reads tokens/s from metrics.jsonl after the first steps (warmup, compilation), and prints the
scaling efficiency tok/s(N) / (N x tok/s(1)) measured in the same run. --compile adds the same
pair with torch.compile. Usage:

    python benchmarks/ddp_scaling.py                       # CPU (gloo), small preset, 128 tokens
    python benchmarks/ddp_scaling.py --compile --device cuda --preset base --block-size 1024
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' synthetic corpus


def synthetic_data(root: Path) -> Path:
    """Plausible Python files -> tokenizer -> token shards, as the tests build them (about 10 s)."""
    from conftest import write_python_tree

    from codecomplete.train.cli import run_collect, run_prepare, run_tokenizer

    write_python_tree(root / "code", n_repos=6, files_per_repo=20)
    run_collect([root / "code"], root / "corpus")
    run_tokenizer(root / "corpus", root / "tokenizer.json", vocab_size=2048)
    run_prepare(root / "corpus", root / "tokenizer.json", root / "data", val_fraction=0.1)
    return root / "data"


def tokens_per_s(data: Path, out: Path, nproc: int, args: argparse.Namespace, compile: bool) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "codecomplete.train.cli",
           "train", str(data), "--out", str(out), "--preset", args.preset, "--block-size", str(args.block_size),
           "--batch-size", str(args.batch_size), "--grad-accum", "2", "--max-steps", str(args.steps),
           "--eval-every", str(10**9), "--eval-tokens", str(args.block_size), "--log-every", "1", "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd + (["--compile"] if compile else []), cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"torchrun failed:\n{done.stderr[-3000:]}")
    steps = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["event"] == "step"]
    first, last = steps[args.warmup - 1], steps[-1]  # elapsed is the ranks' agreed wall time
    return (last["tokens"] - first["tokens"]) / (last["elapsed"] - first["elapsed"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a folder from `prepare` (default: a synthetic corpus built here)")
    p.add_argument("--preset", default="small")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per micro-batch; 2 micro-batches per step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the rate")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per process (1: one core each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    args = p.parse_args(argv)

    import torch

    print(f"torch {torch.__version__} | {args.device} | {os.cpu_count()} cores | preset {args.preset}, "
          f"{args.batch_size}x{args.block_size} tokens x 2 micro-batches per step | {args.threads} thread(s) per process")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_data(Path(tmp) / "synthetic")
        t0 = time.perf_counter()
        rows = []
        for compile in (False, True) if args.compile else (False,):
            one, two = (tokens_per_s(data, Path(tmp) / f"run-{n}-{compile}", n, args, compile) for n in (1, 2))
            rows.append((compile, one, two))
    print(f"\n{'mode':<8} {'1 process tok/s':>16} {'2 processes tok/s':>18} {'efficiency':>11}")
    for compile, one, two in rows:
        print(f"{'compile' if compile else 'eager':<8} {one:>16,.0f} {two:>18,.0f} {two / (2 * one):>11.0%}")
    if args.compile:
        (_, eager1, eager2), (_, comp1, comp2) = rows
        print(f"\ntorch.compile speed-up: {comp1 / eager1:.2f}x with 1 process, {comp2 / eager2:.2f}x with 2")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
