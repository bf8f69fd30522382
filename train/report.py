"""RUN/report.md and its PNGs: did training go well, and how does the model compare?"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codecomplete.engine.errors import CodecompleteError

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
PREFIX_BINS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 1_000_000))


METRIC_ROWS = ("cases", "exact_match", "edit_similarity", "best_of_n_exact_match", "best_of_n_edit_similarity", "parses",
               "empty", "loops", "copied", "latency_p50_ms", "latency_p95_ms")


def fmt(key: str, value: float) -> str:
    if key == "cases":
        return str(int(value))
    if key.endswith("_ms"):
        return f"{value:.0f}"
    if key.endswith("similarity"):
        return f"{value:.3f}"
    return f"{value:.1%}"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise CodecompleteError(f"{path} line {n} is not JSON; the run's log is damaged") from None
    return records


def exact_match_by_prefix(cases: list[dict[str, Any]], system: str) -> list[tuple[str, int, float]]:
    """(bin label, cases, top-1 exact match) by how many tokens of the line were typed."""
    out = []
    for lo, hi in PREFIX_BINS:
        sel = [c[system]["exact"] for c in cases if system in c and lo <= c["prefix_tokens"] <= hi]
        label = str(lo) if lo == hi else (f"{lo}+" if hi >= 1_000_000 else f"{lo}-{hi}")
        out.append((label, len(sel), sum(sel) / len(sel) if sel else 0.0))
    return out


def _plots(run: Path, metrics: list[dict[str, Any]], evaluation: dict[str, Any] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    steps = [m for m in metrics if m.get("event") == "step"]
    evals = [m for m in metrics if m.get("event") == "eval"]
    if steps:
        fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        ax_loss.plot([m["step"] for m in steps], [m["loss"] for m in steps], label="train", lw=1)
        if evals:
            ax_loss.plot([m["step"] for m in evals], [m["val_loss"] for m in evals], "o-", label="validation")
        ax_loss.set_ylabel("loss (nats/token)")
        ax_loss.legend()
        ax_loss.grid(alpha=0.3)
        ax_lr.plot([m["step"] for m in steps], [m["lr"] for m in steps])
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("step")
        ax_lr.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(run / "loss.png", dpi=100)
        plt.close(fig)
        written.append("loss.png")
    if evaluation and evaluation["cases"].get("line"):
        cases = evaluation["cases"]["line"]
        systems = [s for s in ("model", "baseline") if s in cases[0]]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            bins = exact_match_by_prefix(cases, system)
            ax.bar([j + i * width for j in range(len(bins))], [em for _, _, em in bins], width, label=system)
            ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(bins))], [f"{lab}\n({n})" for lab, n, _ in bins])
        ax.set_xlabel("tokens of the line already typed (cases)")
        ax.set_ylabel("top-1 exact match")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run / "exact_match_by_prefix.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        for system in systems:
            ax.hist([c[system]["latency_ms"] for c in cases], bins=30, alpha=0.6, label=system)
        ax.set_xlabel("latency per completion (ms)")
        ax.set_ylabel("cases")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run / "latency.png", dpi=100)
        plt.close(fig)
        written += ["exact_match_by_prefix.png", "latency.png"]
    return written


def _summary_table(block: dict[str, dict[str, float]]) -> list[str]:
    systems = list(block)
    rows = ["| metric | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for key in METRIC_ROWS:
        if all(key in block[s] for s in systems):
            rows.append(f"| {key.replace('_', ' ')} | " + " | ".join(fmt(key, block[s][key]) for s in systems) + " |")
    return rows


def write_report(run: Path) -> Path:
    metrics_path = run / METRICS_FILE
    if not metrics_path.is_file():
        raise CodecompleteError(f"{run} holds no {METRICS_FILE}; pass the folder a `codecomplete-train train` run wrote")
    metrics = read_metrics(metrics_path)
    eval_path = run / EVAL_FILE
    evaluation = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    plots = _plots(run, metrics, evaluation)

    evals = [m for m in metrics if m.get("event") == "eval"]
    steps = [m for m in metrics if m.get("event") == "step"]
    lines = [f"# Training report: {run.name}", ""]
    if evals:
        best = min(evals, key=lambda m: m["val_loss"])
        last = evals[-1]
        lines += [
            f"- steps: {last['step']:,}; tokens seen: {last['tokens']:,}; wall time: {last['elapsed'] / 60:.1f} min",
            f"- validation loss: first {evals[0]['val_loss']:.3f}, best {best['val_loss']:.3f} (step {best['step']}), "
            f"last {last['val_loss']:.3f} nats/token = {last['val_bpb']:.3f} bits per byte",
        ]
        if steps:
            lines.append(f"- training throughput (last logged): {steps[-1]['tok_per_s']:,.0f} tokens/s")
        if len(evals) >= 2 and last["val_loss"] > best["val_loss"] + 0.05:
            lines.append("- **validation loss rose after its best: overfitting or too high a learning rate**")
    lines += [""] + ([f"![loss and learning rate]({plots[0]})", ""] if "loss.png" in plots else [])
    if evaluation is None:
        lines += [f"No {EVAL_FILE} yet: run `codecomplete-train eval {run / 'best'}` for completion metrics.", ""]
    else:
        lm = evaluation["lm"]
        if lm:
            lines += ["## Language modelling (held out)", "",
                      f"loss {lm['loss']:.3f}, perplexity {lm['perplexity']:.1f}, {lm['bits_per_byte']:.3f} bits per byte, "
                      f"next-token accuracy {lm['next_token_accuracy']:.1%} on {lm['tokens']:,} tokens", ""]
        lines += ["## Line completion (rest of the line)", "", *_summary_table(evaluation["line"]), ""]
        lines += ["![exact match by prefix length](exact_match_by_prefix.png)", "", "![latency](latency.png)", ""]
        lines += ["## Function bodies (first lines)", "", *_summary_table(evaluation["body"]), ""]
        lines += [f"Cases drawn with seed {evaluation['config']['seed']} from {json.dumps(evaluation['source'])}.", ""]
    out = run / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
