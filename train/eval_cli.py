"""`codecomplete-train eval | baseline | report`: is a model any good, and better than counting?"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.progress import console, make_progress
from codecomplete.train.report import METRIC_ROWS, fmt

EVAL_FILE = "eval.json"


def is_ngram(path: Path) -> bool:
    config = path / "config.json"
    try:
        return json.loads(config.read_text()).get("kind") == "ngram"
    except (OSError, ValueError):
        return False


def train_ids(data: Path) -> np.ndarray:
    from codecomplete.train.data import TokenShards

    shards = TokenShards(data, "train")
    if not shards.tokens:
        raise CodecompleteError(f"{data} has an empty training split; prepare more code")
    return np.concatenate([np.asarray(a) for a in shards.arrays])


def run_baseline(data: Path, out: Path | None, order: int = 4) -> Any:
    from codecomplete.engine.tokenizer import Tokenizer
    from codecomplete.train.ngram import NgramConfig, NgramModel

    tokenizer = Tokenizer.from_file(data / "tokenizer.json")
    t0 = time.perf_counter()
    with console.status(f"counting {order}-grams in the training split of {data}"):
        model = NgramModel.train(train_ids(data), tokenizer, NgramConfig(order=order))
    console.print(f"n-gram baseline: {model.tokens:,} tokens, contexts per length {[len(t.keys) for t in model.tables]} "
                  f"({time.perf_counter() - t0:.0f} s)")
    if out is not None:
        model.save(out, str(data))
        console.print(f"wrote {out}")
    return model


def _data_of(checkpoint: Path) -> Path | None:
    """The prepared folder a checkpoint was trained on, from its provenance."""
    if is_ngram(checkpoint):
        data = json.loads((checkpoint / "config.json").read_text()).get("data")
    else:
        from codecomplete.engine.checkpoint import read_config

        data = read_config(checkpoint).get("provenance", {}).get("data")
    if not data:
        return None
    # A model's checkpoint sits in its run folder and names the data from there; older ones
    # (and n-gram baselines) name it as given on the command line.
    return next((p for p in (checkpoint.parent / data, Path(data)) if (p / "meta.json").is_file()), None)


def run_eval(
    checkpoint: Path,
    data: Path | None = None,
    corpus: Path | None = None,
    baseline: Path | None = None,
    use_baseline: bool = True,
    out: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    context_weight: float | None = None,
    repo_config: dict[str, Any] | None = None,
    **config: Any,
) -> dict:
    from codecomplete.engine.completion import CompletionEngine
    from codecomplete.engine.copy_index import INDEX_FILE, CopyIndex
    from codecomplete.engine.repo_context import RepoContextConfig
    from codecomplete.train.corpus import iter_documents
    from codecomplete.train.evaluate import (
        EvalConfig,
        EvalResult,
        encode_documents,
        evaluate,
        lm_metrics,
        repo_contexts,
        split_documents,
    )
    from codecomplete.train.ngram import NgramCompleter

    cfg = EvalConfig(**config)
    if corpus is not None and not corpus.exists():  # before loading anything
        raise CodecompleteError(f"{corpus} does not exist; pass a corpus folder from `collect` or a Parquet file")
    if cfg.repo_context and corpus is None:
        raise CodecompleteError("--repo-context needs --corpus: a held-out corpus with repo and path columns (a prepared folder has neither)")
    if data is None and corpus is None:
        data = _data_of(checkpoint)
        if data is None:
            raise CodecompleteError(f"say what to evaluate on: --data DATA (its validation split) or --corpus FOLDER; {checkpoint} names no prepared folder that exists")
    train_data = data or _data_of(checkpoint)

    systems: dict[str, Any] = {}
    if is_ngram(checkpoint):
        systems["model"] = NgramCompleter.from_path(checkpoint)
    else:
        systems["model"] = CompletionEngine.from_checkpoint(checkpoint, device, threads=threads, min_score=-1e9)
    if context_weight is not None:  # else the checkpoint's completion.context_weight, else the default
        systems["model"].context_weight = context_weight
    tokenizer = systems["model"].tokenizer
    if use_baseline:
        if baseline is not None:
            systems["baseline"] = NgramCompleter.from_path(baseline)
        elif train_data is not None:
            console.print(f"no --baseline given: counting one from {train_data} (save one with `codecomplete-train baseline`)")
            systems["baseline"] = NgramCompleter(run_baseline(train_data, None))
        else:
            console.print("[yellow]no n-gram baseline: pass --baseline or --data")

    repo_of = None
    if corpus is not None:
        documents = list(iter_documents(corpus))
        docs = [d.text for d in documents]
        source = {"corpus": str(corpus), "documents": len(docs)}
        if cfg.repo_context:
            if not all(d.repo and d.path for d in documents):
                raise CodecompleteError(f"--repo-context needs repo and path columns in {corpus}; `collect` and `scrape` write both")
            repo_cfg = RepoContextConfig(**(repo_config or {}))
            triples = [(d.repo, d.path, d.text) for d in documents]
            with console.status(f"indexing the {len({d.repo for d in documents})} repositories of {corpus}"):
                built = {}  # one set of contexts per tokenizer: the project n-grams are token ids
                for s in systems.values():
                    if s.tokenizer.sha256 not in built:
                        built[s.tokenizer.sha256] = repo_contexts(triples, s.tokenizer, repo_cfg)
                repo_of = {name: built[s.tokenizer.sha256] for name, s in systems.items()}
            source["repo_context"] = dataclasses.asdict(repo_cfg)
    else:
        assert data is not None
        docs = split_documents(data, "val", tokenizer)
        source = {"data": str(data), "split": "val", "documents": len(docs)}
    if not docs:
        raise CodecompleteError("no held-out documents to evaluate on")

    index = None
    if train_data is not None and (train_data / INDEX_FILE).is_file():
        index = CopyIndex.load(train_data / INDEX_FILE)
    else:
        console.print("[yellow]no copy index beside the training data (prepare writes one): memorisation is not measured")

    lm: dict[str, float] = {}
    if "model" in systems and isinstance(systems["model"], CompletionEngine):
        with console.status("language-modelling metrics"):
            if corpus is not None:
                ids, n_bytes = encode_documents(tokenizer, docs)
            else:
                from codecomplete.train.data import TokenShards

                val = TokenShards(data, "val")
                ids, n_bytes = np.concatenate([np.asarray(a) for a in val.arrays]), val.bytes
            lm = lm_metrics(systems["model"].model, ids, n_bytes, cfg.lm_tokens)

    with make_progress("cases") as progress:
        total = (cfg.line_cases + cfg.body_cases) * len(systems) * (2 if repo_of else 1)
        task = progress.add_task("eval", total=total)
        line, body, cases = evaluate(systems, docs, tokenizer, cfg, index, on_case=lambda k: progress.advance(task, k), repo_of=repo_of)
        progress.update(task, completed=total)  # fewer documents than cases: the bar still ends full
    weights = {f"{name}_context_weight": system.context_weight for name, system in systems.items()}
    result = EvalResult(config=cfg.__dict__ | {"checkpoint": str(checkpoint)} | weights, source=source | {"copy_index": index is not None}, lm=lm, line=line, body=body, cases=cases)
    doc = result.to_dict()
    out = out or checkpoint.parent / EVAL_FILE
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print_tables(doc)
    console.print(f"wrote {out}")
    return doc


def print_tables(doc: dict) -> None:
    from rich.table import Table

    if doc["lm"]:
        lm = doc["lm"]
        console.print(f"language modelling on {lm['tokens']:,} tokens: loss {lm['loss']:.3f}, perplexity {lm['perplexity']:.1f}, "
                      f"{lm['bits_per_byte']:.3f} bits per byte, next-token accuracy {lm['next_token_accuracy']:.1%}")
    for title, block in (("line completion (rest of the line)", doc["line"]), ("function bodies (first lines)", doc["body"])):
        table = Table(title=title)
        table.add_column("metric")
        for name in block:
            table.add_column(name, justify="right")
        for key in METRIC_ROWS:
            if all(key in s for s in block.values()):
                table.add_row(key.replace("_", " "), *(fmt(key, s[key]) for s in block.values()))
        console.print(table)


def parse_repo_config(text: str | None) -> dict[str, Any] | None:
    from codecomplete.engine.repo_context import RepoContextConfig

    if text is None:
        return None
    keys = {f.name for f in dataclasses.fields(RepoContextConfig)}
    try:
        config = json.loads(text)
        RepoContextConfig(**config)
    except (ValueError, TypeError) as e:
        raise CodecompleteError(f"--repo-config {text!r} is not a JSON object of {', '.join(sorted(keys))} ({e})") from e
    return config


def add_eval_commands(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (runs/X/best) or an n-gram baseline folder.")],
        data: Annotated[Path | None, typer.Option(help="Prepared folder: evaluate on its validation split (default: the one the checkpoint trained on).")] = None,
        corpus: Annotated[Path | None, typer.Option(help="Evaluate on this held-out corpus instead (collect folder or Parquet).")] = None,
        baseline: Annotated[Path | None, typer.Option(help="n-gram baseline from `codecomplete-train baseline` (default: count one from the training data).")] = None,
        no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the n-gram baseline.")] = False,
        line_cases: Annotated[int, typer.Option(help="Line-completion cases.")] = 200,
        body_cases: Annotated[int, typer.Option(help="Function-body cases.")] = 40,
        n: Annotated[int, typer.Option(help="Candidates per line case (best-of-n).")] = 3,
        body_lines: Annotated[int, typer.Option(help="Lines of a body that are scored.")] = 3,
        lm_tokens: Annotated[int, typer.Option(help="Held-out tokens for loss and bits per byte.")] = 131_072,
        seed: Annotated[int, typer.Option(help="Seed for choosing cases: the same seed, the same cases.")] = 0,
        out: Annotated[Path | None, typer.Option(help="Where to write the JSON (default: eval.json beside the checkpoint).")] = None,
        device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "cpu",
        threads: Annotated[int | None, typer.Option(help="CPU threads (default: PyTorch's choice).")] = None,
        context_weight: Annotated[float | None, typer.Option(help="How much the prompt's own n-grams may weigh, 0 to below 1 (default: the checkpoint's completion.context_weight, else 0.5); try a few on a tuning corpus.")] = None,
        repo_context: Annotated[bool, typer.Option("--repo-context", help="Also complete every case with the other files of its repository in --corpus as context (snippets, the project's n-grams), for every system, side by side.")] = False,
        repo_config: Annotated[str | None, typer.Option(help='Repository-context settings as JSON, e.g. \'{"snippets": false, "ngram_weight": 0.2}\' (keys of engine.repo_context.RepoContextConfig).')] = None,
    ) -> None:
        """Measure a model: loss and bits per byte, line and body completion against the n-gram baseline, loops, copies, latency."""
        if data is not None and corpus is not None:
            raise CodecompleteError("give --data or --corpus, not both")
        if context_weight is not None and not 0 <= context_weight < 1:
            raise CodecompleteError(f"--context-weight must be from 0 to below 1, not {context_weight}")
        run_eval(checkpoint, data, corpus, baseline, not no_baseline, out, device, threads, context_weight,
                 parse_repo_config(repo_config), line_cases=line_cases, body_cases=body_cases, n=n, body_lines=body_lines,
                 lm_tokens=lm_tokens, seed=seed, repo_context=repo_context or repo_config is not None)

    @app.command("baseline")
    def baseline_cmd(
        data: Annotated[Path, typer.Argument(help="Prepared folder: the n-gram counts its training split.")],
        out: Annotated[Path, typer.Option(help="Folder for the baseline (ngram.npz, tokenizer.json, config.json).")] = Path("runs/ngram"),
        order: Annotated[int, typer.Option(help="Tokens per n-gram (context = order - 1).")] = 4,
    ) -> None:
        """Count an n-gram model (with backoff) on the training split: the baseline every evaluation shows."""
        run_baseline(data, out, order)

    @app.command("report")
    def report_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder (with metrics.jsonl, and eval.json from `eval`).")],
    ) -> None:
        """Write RUN/report.md with plots: loss and learning rate, exact match by prefix length, latency."""
        from codecomplete.train.report import write_report

        path = write_report(run)
        console.print(f"wrote {path} and its plots")
