"""What `adapt` buys, as a time split: learn a package's older release, complete its newer one.

For each OLD:NEW pair of a package the default model never saw (models/default/MODEL_CARD.md holds
them out), the two releases' wheels come from the package index (`pip download`, cached in --work):

    adapt        `codecomplete-train adapt` on the older release's source (--minutes on this machine)
    cases        line-completion cases from the newer release's files (evaluate.line_cases), and apart
                 from them cases on lines that do not occur in the older release (new code)
    systems      the base model, the adapted one (its fine-tuned weights unblended, adapt --blend 1),
                 and the n-gram baseline counted on the same older release (its training split, as
                 the adapted model saw it); --repo-context also runs each with the newer release's
                 other files as repository context; --blend adds the adapted weights blended with
                 the base's (adapt --blend; by default adapt's own share), from the same run
    forgetting   base and adapted on a general set of other held-out packages (line exact match), and
                 bits per byte there from adapt's own comparison

    python benchmarks/adapt_timesplit.py                      # 5 packages, 10 minutes each: about an hour on 2 cores
    python benchmarks/adapt_timesplit.py --minutes 1 --pairs typer==0.24.0:0.27.0 --cases 40 --general-cases 40   # a toy run

Adapted runs are kept in --work and reused when the benchmark runs again (adapt resumes them).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from codecomplete.engine.completion import CompletionEngine
from codecomplete.engine.repo_context import RepoContextConfig
from codecomplete.models import DEFAULT_CHECKPOINT
from codecomplete.train.adapt import AdaptConfig, blend_with_base, plan, run_adapt
from codecomplete.train.collect import iter_python_files, judge
from codecomplete.train.eval_cli import run_baseline
from codecomplete.train.evaluate import line_cases, no_repo, repo_contexts, run_line_cases, summarize
from codecomplete.train.filters import FilterConfig, is_test_path
from codecomplete.train.ngram import NgramCompleter

PAIRS = ["click==8.1.8:8.2.1", "attrs==24.2.0:25.3.0", "markdown-it-py==3.0.0:4.0.0", "typer==0.24.0:0.27.0",
         "cattrs==24.1.2:25.1.1"]
GENERAL = ["pygls==1.3.1", "h11==0.16.0", "iniconfig==2.0.0", "lsprotocol==2023.0.1"]  # also held out of the default model


def release(spec: str, work: Path) -> Path:
    """PKG==VERSION's wheel from the package index, its .py files unpacked into work/src/PKG-VERSION."""
    name, version = spec.split("==")
    folder = work / "src" / f"{name}-{version}"
    if not folder.is_dir():
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "--only-binary", ":all:", "-d", str(wheels),
                        "--quiet"], check=True)
        wheel = next(w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{name.replace('-', '_').lower()}-{version}-"))
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.endswith(".py") and ".dist-info/" not in member:
                    z.extract(member, folder)
    return folder


def files(folder: Path) -> list[tuple[str, str]]:
    """(path, text) of the folder's Python files that pass collect's filters, test files dropped."""
    filters, seen, out = FilterConfig(), set(), []
    for file in iter_python_files(folder, project=True):
        path = file.relative_to(folder).as_posix()
        reason, text, _ = judge(file.read_bytes(), filters, seen)
        if reason is None and not is_test_path(path):
            out.append((path, text))
    return out


def line_exact_match(systems: dict[str, Any], cases: list, repo: dict[str, Any] | None) -> dict[str, float]:
    """Exact match of each system's first candidate over cases (in the same order for every system)."""
    result = {}
    for name, system in systems.items():
        scored = run_line_cases(system, cases, 1, None, repo_of=repo[name] if repo else no_repo)
        result[name] = summarize(scored)["exact_match"] if scored else float("nan")
    return result


def one_pair(pair: str, args: argparse.Namespace, base: CompletionEngine, general: list[str], general_cases: list) -> dict[str, Any]:
    name, versions = pair.split("==")
    old_version, new_version = versions.split(":")
    old, new = release(f"{name}=={old_version}", args.work), release(f"{name}=={new_version}", args.work)
    out = args.work / "runs" / f"{name}-{old_version}"
    # blend=1 keeps best unblended, so that every --blend share is taken from the fine-tuned weights
    cfg, info = plan([old], out, args.base, minutes=args.minutes, eval_cases=0, general=str(args.work / "general"), device=args.device,
                     replay=args.replay, min_delta=args.min_delta, blend=1.0)
    state = run_adapt(cfg, info)
    adapted = CompletionEngine.from_checkpoint(out / "best", args.device, min_score=-1e9)
    systems = {"base": base, "adapted": adapted, "n-gram": NgramCompleter(run_baseline(out / "data", None))}
    for share in args.blend:  # what adapt --blend writes, from this run's fine-tuned weights
        folder = out / f"blend-{share:g}"
        if not folder.exists():
            shutil.copytree(out / "best", folder)
            blend_with_base(folder, cfg.base, share)
        systems[f"blend {share:g}"] = CompletionEngine.from_checkpoint(folder, args.device, min_score=-1e9)

    old_lines = {line.strip() for _, text in files(old) for line in text.splitlines()}
    new_files = files(new)
    docs = [text for _, text in new_files]
    all_cases = line_cases(docs, base.tokenizer, args.cases, seed=0)
    # New code is rarer: its cases come from a larger draw (spread over the files as its lines are).
    new = [c for c in line_cases(docs, base.tokenizer, args.cases * 10, seed=1) if (c.line_prefix + c.target).strip() not in old_lines]
    new_cases = random.Random(0).sample(new, min(args.cases, len(new)))
    row = {"package": name, "old": old_version, "new": new_version, "new_files": len(new_files),
           "cases": len(all_cases), "new_line_cases": len(new_cases), "trained": state["trained"],
           "general_bpb": {k: v["bits_per_byte"] for k, v in state["comparison"]["general"]["lm"].items()}}
    t0 = time.perf_counter()
    row["all"] = line_exact_match(systems, all_cases, None)
    row["new_lines"] = line_exact_match(systems, new_cases, None)
    if args.repo_context:
        triples = [(name, path, text) for path, text in new_files]
        repo = repo_contexts(triples, base.tokenizer, RepoContextConfig())
        with_repo = {k: repo for k in systems}
        row["all_repo"] = line_exact_match(systems, all_cases, with_repo)
        row["new_lines_repo"] = line_exact_match(systems, new_cases, with_repo)
    row["general"] = line_exact_match({k: v for k, v in systems.items() if k not in ("base", "n-gram")}, general_cases, None)
    row["eval_s"] = time.perf_counter() - t0
    return row


def pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=PAIRS, help="PKG==OLD:NEW, e.g. click==8.1.8:8.2.1")
    ap.add_argument("--minutes", type=float, default=10.0, help="adapt's fine-tuning budget per package")
    ap.add_argument("--cases", type=int, default=200, help="line cases per package, and as many on new lines")
    ap.add_argument("--general-cases", type=int, default=200)
    ap.add_argument("--base", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--repo-context", action="store_true", help="also complete with the newer release's other files as context")
    ap.add_argument("--replay", type=float, help="adapt's --replay (default: adapt's own)")
    ap.add_argument("--min-delta", type=float, help="adapt's early-stopping threshold, nats per token (default: adapt's own)")
    ap.add_argument("--blend", type=float, nargs="*", default=[AdaptConfig.blend],
                    help=f"also the adapted weights blended with the base's at these shares (adapt --blend), e.g. 0.5 0.7 "
                         f"(default: adapt's own, {AdaptConfig.blend:g}; none without a value)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=Path("runs/adapt_timesplit"))
    ap.add_argument("--json", type=Path, help="write the rows here too (default: WORK/results.json)")
    args = ap.parse_args()
    args.work = args.work.resolve()

    for spec in GENERAL:  # one folder of the general set's packages
        src = release(spec, args.work)
        if not (args.work / "general" / src.name).exists():
            shutil.copytree(src, args.work / "general" / src.name)
    general = [text for _, text in files(args.work / "general")]
    base = CompletionEngine.from_checkpoint(args.base, args.device, min_score=-1e9)
    general_cases = line_cases(general, base.tokenizer, args.general_cases, seed=0)
    base_general = line_exact_match({"base": base}, general_cases, None)["base"]

    rows = [one_pair(pair, args, base, general, general_cases) for pair in args.pairs]
    variant = (f" --replay {args.replay:g}" if args.replay is not None else "") + \
        (f" (min_delta {args.min_delta:g})" if args.min_delta is not None else "")
    print(f"\nline exact match (%), first candidate; base {args.base}; adapt --minutes {args.minutes:g}{variant} on {args.device}")
    print(f"{'package':28} {'cases':>5} {'all: base':>9} {'adapted':>7} {'n-gram':>6} | {'new':>4} {'base':>5} "
          f"{'adapted':>7} {'n-gram':>6} | general {'base':>5} {'adapted':>7} | fine-tune")
    for r in rows:
        t = r["trained"]
        print(f"{r['package'] + ' ' + r['old'] + '->' + r['new']:28} {r['cases']:5} {pct(r['all']['base']):>9} "
              f"{pct(r['all']['adapted']):>7} {pct(r['all']['n-gram']):>6} | {r['new_line_cases']:4} {pct(r['new_lines']['base']):>5} "
              f"{pct(r['new_lines']['adapted']):>7} {pct(r['new_lines']['n-gram']):>6} | general {pct(base_general):>5} "
              f"{pct(r['general']['adapted']):>7} | {t['minutes']:.1f} min, {t['step']} steps, {t['tokens'] / 1e6:.2f}M tokens"
              f"{', stopped early' if t['stopped_early'] else ''}")
        if args.repo_context:
            print(f"{'  + repository context':28} {'':5} {pct(r['all_repo']['base']):>9} {pct(r['all_repo']['adapted']):>7} "
                  f"{pct(r['all_repo']['n-gram']):>6} | {'':4} {pct(r['new_lines_repo']['base']):>5} "
                  f"{pct(r['new_lines_repo']['adapted']):>7} {pct(r['new_lines_repo']['n-gram']):>6} |")
    mean = lambda key, system: sum(r[key][system] for r in rows) / len(rows)  # noqa: E731
    print(f"{'mean':28} {'':5} {pct(mean('all', 'base')):>9} {pct(mean('all', 'adapted')):>7} {pct(mean('all', 'n-gram')):>6} | "
          f"{'':4} {pct(mean('new_lines', 'base')):>5} {pct(mean('new_lines', 'adapted')):>7} {pct(mean('new_lines', 'n-gram')):>6} | "
          f"general {pct(base_general):>5} {pct(mean('general', 'adapted')):>7}")
    for share in args.blend:
        b = f"blend {share:g}"
        line = f"{'  --blend ' + format(share, 'g'):28} {'':5} {'':>9} {pct(mean('all', b)):>7} {'':>6} | {'':4} {'':>5} "
        line += f"{pct(mean('new_lines', b)):>7} {'':>6} | general {'':>5} {pct(mean('general', b)):>7}"
        if args.repo_context:
            line += f" | with repository context: all {pct(mean('all_repo', b))}, new {pct(mean('new_lines_repo', b))}"
        print(line)
    bpb = [(r["general_bpb"]["base"], r["general_bpb"]["adapted"]) for r in rows]
    print("general set bits per byte, base -> adapted: " + ", ".join(f"{r['package']} {b:.3f} -> {a:.3f}" for r, (b, a) in zip(rows, bpb)))
    path = args.json or args.work / "results.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "general_base": base_general, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
