"""Do a model's completions parse? Function bodies completed on held-out files.

For functions in the validation split of a prepared data folder, the prompt is the file up to
and including the `def` line (and its docstring, when there is one); the engine completes the
body in multi-line mode. A completion counts as parsing when the function it finishes is valid
Python on its own. Prints the share, with a few examples.

    python benchmarks/parse_rate.py runs/small/best --data data/ --cases 50
"""
from __future__ import annotations

import argparse
import ast
import random
import textwrap
from pathlib import Path

import numpy as np

from engine.completion import CompletionEngine
from engine.tokenizer import Tokenizer
from train.prepare import read_meta


def val_documents(data: Path, tok: Tokenizer) -> list[str]:
    meta = read_meta(data)
    ids = np.concatenate([np.fromfile(data / s["file"], dtype=meta["dtype"]) for s in meta["splits"]["val"]["shards"]])
    cuts = np.flatnonzero(ids == tok.eot_id)
    return [tok.decode(ids[a + 1 : b].tolist()) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def body_prompts(docs: list[str], cases: int, seed: int) -> list[tuple[str, str]]:
    """(prefix ending after the def line or docstring, the def header) for random functions."""
    rng, out = random.Random(seed), []
    for doc in rng.sample(docs, len(docs)):
        try:
            tree = ast.parse(doc)
        except SyntaxError:
            continue
        lines = doc.splitlines(keepends=True)
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and len(n.body) > 1]
        if not funcs:
            continue
        f = rng.choice(funcs)
        first = f.body[1] if isinstance(f.body[0], ast.Expr) and isinstance(getattr(f.body[0], "value", None), ast.Constant) else f.body[0]
        prefix = "".join(lines[: first.lineno - 1])
        header = "".join(lines[f.lineno - 1 : first.lineno - 1])
        out.append((prefix + " " * first.col_offset, header))
        if len(out) == cases:
            break
    return out


def parses(header: str, body_start: str, completion: str) -> bool:
    try:
        ast.parse(textwrap.dedent(header + body_start + completion))
        return True
    except SyntaxError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="prepared data folder (its validation split is used)")
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    engine = CompletionEngine.from_checkpoint(args.checkpoint, args.device, min_score=-1e9)
    prompts = body_prompts(val_documents(args.data, engine.tokenizer), args.cases, args.seed)
    ok, empty, shown = 0, 0, 0
    for prefix, header in prompts:
        got = engine.complete(prefix, "", n=1, multiline=True, max_new_tokens=96, max_lines=12)
        text = got[0].text if got else ""
        empty += not text
        indent = prefix.rsplit("\n", 1)[-1]
        good = bool(text) and parses(header, indent, text)
        ok += good
        if shown < 3:
            print(f"--- {'parses' if good else 'does not parse'} ---\n{header}{indent}{text}\n")
            shown += 1
    print(f"{ok}/{len(prompts)} function bodies parse ({100 * ok / max(len(prompts), 1):.0f}%); {empty} empty")


if __name__ == "__main__":
    main()
