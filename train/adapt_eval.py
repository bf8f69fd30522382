"""adapt's comparison: the base and the adapted model side by side on the project's held-out files
(with the n-gram baseline counted on the project's other files beside them) and on a general set,
so that both what the project taught the model and what it forgot show.

The cases, scores and systems are evaluation's own (train/evaluate.py), as `eval` runs them.
"""
from __future__ import annotations

import hashlib
import itertools
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codecomplete.train.progress import console, make_progress
from codecomplete.train.report import fmt

GENERAL_FILES = 40  # of the general set, chosen by hash
LM_TOKENS = 32_768  # per set and model, for bits per byte
ROWS = (("line exact match", "line", "exact_match"), ("line edit similarity", "line", "edit_similarity"),
        ("body exact match", "body", "exact_match"), ("copied from training", "line", "copied"),
        ("bits per byte", "lm", "bits_per_byte"))


def _by_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def general_documents(general: str | None, count: int = GENERAL_FILES, skip: int = 0,
                      max_bytes: int | None = None) -> tuple[str, list[tuple[str, str]]]:
    """(what they are, [(name, text)]): `count` documents of `general` (a corpus, or a folder of
    Python code walked and filtered as `collect` does), else of the running Python's standard
    library, in an order fixed by hash, after the first `skip`; at most max_bytes of text."""
    from codecomplete.train.collect import iter_python_files
    from codecomplete.train.corpus import iter_documents
    from codecomplete.train.filters import FilterConfig, is_test_path

    path = Path(general) if general else Path(sysconfig.get_paths()["stdlib"])
    if general and (path.is_file() or next(path.rglob("*.parquet"), None) is not None):
        found = sorted(((f"{d.repo}/{d.path}", d.text) for d in iter_documents(path)), key=lambda d: _by_hash(d[1]))
        title = "documents of"
    else:
        files = [f for f in iter_python_files(path, project=True) if not is_test_path(f.relative_to(path).as_posix())]
        found = _passing(sorted(files, key=lambda f: _by_hash(f.relative_to(path).as_posix())), path, FilterConfig())
        title = "files of" if general else "files of the standard library"
    docs, size = [], 0
    for name, text in itertools.islice(found, skip, None):
        size += len(text.encode("utf-8", "surrogatepass"))
        if len(docs) == count or (max_bytes is not None and size > max_bytes and docs):
            break
        docs.append((name, text))
    return f"{len(docs)} {title} {path}" if general else f"{len(docs)} {title} ({path})", docs


def _passing(files: list[Path], root: Path, filters: Any) -> Iterator[tuple[str, str]]:
    """The files that pass collect's filters, read one at a time (a caller takes the first few)."""
    from codecomplete.train.collect import judge

    seen: set[str] = set()
    for file in files:
        reason, text, _ = judge(file.read_bytes(), filters, seen)
        if reason is None:
            yield file.relative_to(root).as_posix(), text


def compare(cfg: Any, heldout: list[str], on_done: Callable[[float], None]) -> dict[str, Any]:
    """{"project" | "general": {"title", "documents", "lm", "line", "body"}}, each block by system."""
    from codecomplete.engine.completion import CompletionEngine
    from codecomplete.engine.copy_index import INDEX_FILE, CopyIndex
    from codecomplete.train.corpus import iter_documents
    from codecomplete.train.eval_cli import run_baseline
    from codecomplete.train.evaluate import EvalConfig, encode_documents, evaluate, lm_metrics
    from codecomplete.train.ngram import NgramCompleter

    out, keys = Path(cfg.out), set(heldout)
    project = [d.text for d in iter_documents(out / "corpus") if f"{d.repo}/{d.path}" in keys]
    general_title, general = general_documents(cfg.general)
    general = [text for _, text in general]
    models = {name: CompletionEngine.from_checkpoint(path, cfg.device, min_score=-1e9)  # every candidate is scored
              for name, path in (("base", cfg.base), ("adapted", out / "best"))}
    tokenizer = models["base"].tokenizer
    # The n-gram baseline answers completion cases only: no counting when there are none.
    systems = models | ({"n-gram": NgramCompleter(run_baseline(out / "data", None))} if cfg.eval_cases else {})
    sets = [("project", f"{len(project)} held-out files of the project", project, systems, CopyIndex.load(out / "data" / INDEX_FILE)),
            ("general", general_title, general, models, None)]
    eval_cfg = EvalConfig(line_cases=cfg.eval_cases, body_cases=max(1, cfg.eval_cases // 5), lm_tokens=LM_TOKENS)
    per_system = eval_cfg.line_cases + eval_cfg.body_cases
    done, total = 0, sum(len(s[3]) for s in sets) * per_system

    result = {}
    for name, title, docs, completers, index in sets:
        ids, n_bytes = encode_documents(tokenizer, docs)
        with console.status(f"bits per byte on {title}"):
            lm = {system: lm_metrics(engine.model, ids, n_bytes, LM_TOKENS) for system, engine in models.items()}
        line, body = {}, {}
        if cfg.eval_cases and docs:
            with make_progress("cases") as progress:
                task = progress.add_task(f"compare on the {name} set", total=len(completers) * per_system)

                def tick(k: int) -> None:
                    nonlocal done
                    done += k
                    progress.advance(task, k)  # noqa: B023 - called only while this set is evaluated
                    on_done(min(done / total, 1.0))

                line, body, _ = evaluate(completers, docs, tokenizer, eval_cfg, index, on_case=tick)
        result[name] = {"title": title, "documents": len(docs), "lm": lm, "line": line, "body": body}
    return result


def print_comparison(comparison: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="the base and the adapted model, side by side")
    table.add_column("metric")
    columns = [(name, system) for name, block in comparison.items() for system in block["line"] or block["lm"]]
    for name, system in columns:
        table.add_column(f"{name}\n{system}", justify="right")
    for label, part, key in ROWS:
        values = [comparison[name][part].get(system, {}).get(key) for name, system in columns]
        if any(v is not None for v in values):
            table.add_row(label, *("-" if v is None else f"{v:.3f}" if part == "lm" else fmt(key, v) for v in values))
    console.print(table)
    for name, block in comparison.items():
        cases = block["line"].get("base", {}).get("cases", 0)
        console.print(f"{name}: {block['title']}" + (f", {cases} line cases" if cases else ""), highlight=False)


def summary(comparison: dict[str, Any]) -> str:
    """One line for an editor: exact match (else bits per byte) on each set, base -> adapted."""
    parts = []
    for name, block in comparison.items():
        if block["line"]:
            base, adapted = (block["line"][s]["exact_match"] for s in ("base", "adapted"))
            parts.append(f"{name} line exact match {base:.1%} -> {adapted:.1%}")
        elif block["lm"].get("base"):
            base, adapted = (block["lm"][s]["bits_per_byte"] for s in ("base", "adapted"))
            parts.append(f"{name} bits per byte {base:.3f} -> {adapted:.3f}")
    return "; ".join(parts)
