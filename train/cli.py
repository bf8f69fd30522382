"""`codecomplete-train`: collect code, train a tokenizer, prepare shards, train, sample.

Each command parses flags, builds a config dataclass and calls a plain function.
"""
from __future__ import annotations

import shutil
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import PRESETS
from codecomplete.train.adapt_cli import add_adapt_command
from codecomplete.train.eval_cli import add_eval_commands
from codecomplete.train.filters import KEEP_TESTS_HELP, FilterConfig
from codecomplete.train.loop import TrainConfig
from codecomplete.train.progress import console, make_progress
from codecomplete.train.scrape_cli import scrape_app

app = typer.Typer(
    help="Build your own code-completion model: collect Python code, train a tokenizer and a transformer, sample from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(scrape_app, name="scrape")
add_eval_commands(app)
add_adapt_command(app)

TRAIN_DEFAULTS = TrainConfig(data="", out="")
PRESET_HELP = f"Model size: {', '.join(PRESETS)} (tiny is for tests, small trains on a CPU)."


def default_code_folders() -> list[Path]:
    """The running Python's standard library and site-packages (once, where one holds the other)."""
    paths = sysconfig.get_paths()
    folders: list[Path] = []
    for p in (Path(paths["stdlib"]), Path(paths["purelib"]), Path(paths["platlib"])):
        if p.is_dir() and not any(p == f or f in p.parents for f in folders):
            folders.append(p)
    return folders


# -- collect ---------------------------------------------------------------------------------
def run_collect(folders: list[Path], out: Path, min_bytes: int = 1024, max_bytes: int = 100_000, overwrite: bool = False, keep_tests: bool = False,
                project: bool = False) -> Any:
    from codecomplete.train.collect import CollectConfig, collect, count_candidate_files

    cfg = CollectConfig(filters=FilterConfig(min_bytes=min_bytes, max_bytes=max_bytes, drop_tests=not keep_tests), overwrite=overwrite,
                        project=project)
    with make_progress("files") as progress:
        task = progress.add_task("collect", total=count_candidate_files(folders, project=project))
        summary = collect(folders, out, cfg, on_file=lambda n: progress.advance(task))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items(), key=lambda kv: -kv[1])) or "none"
    console.print(f"kept {summary.files_kept} of {summary.files_seen} files ({summary.bytes_kept / 1e6:.1f} MB); rejected: {rejected}")
    console.print(f"wrote {len(summary.shards)} shard(s) and summary.json to {out}")
    return summary


@app.command("collect")
def collect_cmd(
    folders: Annotated[list[Path], typer.Argument(help="Folders of Python code to walk (recursively, *.py).")],
    out: Annotated[Path, typer.Option(help="Folder for the Parquet shards and summary.json.")] = Path("corpus"),
    min_bytes: Annotated[int, typer.Option(help="Skip files smaller than this.")] = 1024,
    max_bytes: Annotated[int, typer.Option(help="Skip files larger than this.")] = 100_000,
    keep_tests: Annotated[bool, typer.Option(help=KEEP_TESTS_HELP)] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace shards already in --out.")] = False,
) -> None:
    """Walk folders, keep clean unique Python files, write a Parquet corpus."""
    run_collect(folders, out, min_bytes, max_bytes, overwrite, keep_tests)


# -- tokenizer -------------------------------------------------------------------------------
def run_tokenizer(corpus: Path, out: Path, vocab_size: int = 16384, text_column: str | None = None) -> Any:
    from codecomplete.train.corpus import count_documents, iter_documents
    from codecomplete.train.tokenizer_train import train_tokenizer

    if not 256 + 5 < vocab_size <= 2**20:
        raise CodecompleteError(f"--vocab-size {vocab_size} is out of range; use a value between 512 and 65536")
    with make_progress("docs") as progress:
        task = progress.add_task("tokenizer", total=count_documents(corpus))

        def texts():
            for doc in iter_documents(corpus, text_column):
                progress.advance(task)
                yield doc.text

        tokenizer = train_tokenizer(texts(), vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    console.print(f"wrote {out}: byte-level BPE, {tokenizer.vocab_size} tokens")
    return tokenizer


@app.command("tokenizer")
def tokenizer_cmd(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder from `collect`, or any Parquet file/folder with a text column.")],
    out: Annotated[Path, typer.Option(help="Where to write tokenizer.json.")] = Path("runs/tokenizer.json"),
    vocab_size: Annotated[int, typer.Option(help="Tokens in the vocabulary, special tokens included.")] = 16384,
    text_column: Annotated[str | None, typer.Option(help="Column holding the code (default: content, text or code).")] = None,
) -> None:
    """Train a byte-level BPE tokenizer on whole files."""
    run_tokenizer(corpus, out, vocab_size, text_column)


# -- dedupe ----------------------------------------------------------------------------------
def run_dedupe(corpus: Path, out: Path, threshold: float = 0.85, text_column: str | None = None) -> Any:
    from codecomplete.train.corpus import count_documents
    from codecomplete.train.neardup import REPORT_NAME, NearDupConfig, dedupe_corpus

    with make_progress("docs") as progress:
        task = progress.add_task("near-duplicates", total=count_documents(corpus))
        report = dedupe_corpus(corpus, out, NearDupConfig(threshold=threshold), text_column, on_doc=lambda: progress.advance(task))
    console.print(
        f"kept {report.files_kept:,} of {report.files_in:,} files: removed {report.removed:,} near-duplicates "
        f"in {report.clusters:,} clusters (Jaccard >= {threshold})"
    )
    console.print(f"wrote the deduplicated corpus and {REPORT_NAME} (largest clusters) to {out}")
    return report


@app.command("dedupe")
def dedupe_cmd(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (from `collect` or `scrape github`), or any Parquet file/folder with a text column.")],
    out: Annotated[Path, typer.Option(help="New folder for the deduplicated corpus and neardup.json.")],
    threshold: Annotated[float, typer.Option(help="Estimated Jaccard similarity of 5-gram shingles at which two files are near-duplicates.")] = 0.85,
    text_column: Annotated[str | None, typer.Option(help="Column holding the code (default: content, text or code).")] = None,
) -> None:
    """Remove near-duplicate files (MinHash LSH, BigCode-style): each cluster keeps its first file."""
    run_dedupe(corpus, out, threshold, text_column)


# -- prepare ---------------------------------------------------------------------------------
def run_prepare(corpus: Path, tokenizer: Path, out: Path, val_fraction: float = 0.05, split_by: str = "auto", text_column: str | None = None,
                overwrite: bool = False, repo_context: float = 0.0, val_files: list[str] | None = None, workers: int | None = None) -> dict:
    from codecomplete.train.corpus import count_documents
    from codecomplete.train.prepare import PrepareConfig, available_cpus, prepare

    if not 0 <= repo_context <= 1:
        raise CodecompleteError(f"--repo-context is a share of files, from 0 to 1, not {repo_context}")
    if workers is not None and workers < 1:
        raise CodecompleteError(f"--workers is a number of processes, 1 or more, not {workers}")
    cfg = PrepareConfig(val_fraction=val_fraction, split_by=split_by, text_column=text_column, overwrite=overwrite,
                        repo_context=repo_context, val_files=val_files, workers=workers or available_cpus())
    if repo_context:  # a minute on 14K files before the first document is written
        console.print(f"indexing each repository's files for the snippets, then writing ({cfg.workers} "
                      f"worker{'s' if cfg.workers > 1 else ''})")
    with make_progress("docs") as progress:
        task = progress.add_task("prepare", total=count_documents(corpus))
        meta = prepare(corpus, tokenizer, out, cfg, on_docs=lambda n: progress.advance(task, n))
    for split, s in meta["splits"].items():
        console.print(f"{split}: {s['documents']:,} files, {s['tokens']:,} tokens, {s['bytes'] / max(s['tokens'], 1):.2f} bytes/token")
    if meta["repo_context"]:
        console.print(f"{meta['repo_context']['examples']:,} repository-level examples (snippets of their repository in front)")
    console.print(f"wrote {meta['dtype']} shards, tokenizer.json and meta.json to {out} (split by {meta['split_by']})")
    return meta


@app.command("prepare")
def prepare_cmd(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder from `collect`, or any Parquet file/folder with a text column.")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json from `codecomplete-train tokenizer`.")],
    out: Annotated[Path, typer.Option(help="Folder for token shards and meta.json.")] = Path("data"),
    val_fraction: Annotated[float, typer.Option(help="Share of repositories (or files) held out for validation.")] = 0.05,
    split_by: Annotated[str, typer.Option(help="auto, repo or file: the unit that goes wholly to one split (auto: repo when there are 20+ repos).")] = "auto",
    text_column: Annotated[str | None, typer.Option(help="Column holding the code (default: content, text or code).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace data already prepared in --out.")] = False,
    repo_context: Annotated[float, typer.Option(help="Share of files (0-1) written as repository-level examples: in chunks, each behind snippets of the other files of its repository, as the engine's prompt puts them; a model trained so reads repository context better.")] = 0.0,
    workers: Annotated[int | None, typer.Option(help="Processes that write the repository-level examples (default: every CPU core this process may use); the shards are the same for any number.")] = None,
) -> None:
    """Encode the corpus into train/validation token shards."""
    run_prepare(corpus, tokenizer, out, val_fraction, split_by, text_column, overwrite, repo_context, workers=workers)


# -- train -----------------------------------------------------------------------------------
def run_train(cfg: Any, resume: bool = False) -> dict:
    """Train in this process, or as one of torchrun's processes (rank 0 alone prints)."""
    from codecomplete.train import distributed
    from codecomplete.train.loop import Trainer

    finished = False
    try:
        if not distributed.is_main_process():
            summary = Trainer(cfg, resume=resume).run()
        else:
            summary = train_with_progress(cfg, resume)
        finished = True
        return summary
    except CodecompleteError:
        if not distributed.is_main_process():  # rank 0 prints the same one line
            raise SystemExit(1) from None
        raise
    finally:
        distributed.teardown(finished)


def train_with_progress(cfg: Any, resume: bool, on_event: Callable[[dict], None] | None = None) -> dict:
    """on_event(event): also told every event of the loop (adapt stops early from it)."""
    from codecomplete.train.loop import Trainer

    by_steps = cfg.max_steps is not None and (cfg.minutes is None)
    with make_progress("steps" if by_steps else None) as progress:
        total = cfg.max_steps if by_steps else cfg.minutes * 60
        task = progress.add_task("train", total=total)
        state = {"val": "-", "loss": "-"}

        def report(event: dict) -> None:
            if event["event"] == "start":
                on = f"{event['processes']} processes on {event['device'].split(':')[0]}" if event["processes"] > 1 else event["device"]
                console.print(f"training {event['params'] / 1e6:.1f}M parameters on {on}: "
                              f"{event['train_tokens']:,} train tokens, {event['val_tokens']:,} validation tokens")
            elif event["event"] == "step":
                state["loss"] = f"{event['loss']:.3f} ({event['tok_per_s']:,.0f} tok/s)"
            elif event["event"] == "eval":
                state["val"] = f"{event['val_loss']:.3f} ({event['val_bpb']:.3f} bpb)"
            elif event["event"] == "bad_step":
                console.print(f"[yellow]step {event['step']}: non-finite loss or gradient, skipped ({event['consecutive']} in a row)")
            elif event["event"] == "rollback":
                console.print(f"[yellow]rolled back from step {event['from_step']} to the checkpoint of step {event['step']}; "
                              f"learning rate x{event['lr_scale']:g} from now on")
            elif event["event"] == "warning":
                console.print(f"[yellow]warning: {event['message']}", highlight=False)
            if "elapsed" in event:
                progress.update(task, completed=event["step"] if by_steps else event["elapsed"],
                                description=f"train loss {state['loss']} val {state['val']}")
            if on_event is not None:
                on_event(event)

        final = Trainer(cfg, resume=resume, report=report).run()
    out = Path(cfg.out)
    if final["event"] == "stopped":
        console.print(f"stopped by {final['signal']} at step {final['step']}; wrote {out / 'last'}; to continue, run the same command again (`train` with --resume)")
        raise typer.Exit(0)  # a clean stop, also for commands that would go on after training
    console.print(f"step {final['step']}: validation loss {final['val_loss']:.4f}, {final['val_bpb']:.4f} bits per byte")
    console.print(f"wrote {out / 'best'} (lowest validation loss) and {out / 'last'}; metrics in {out / 'metrics.jsonl'}")
    return final


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Folder written by `prepare`.")],
    out: Annotated[Path, typer.Option(help="Run folder: best/, last/, prev/, metrics.jsonl, tb/, trainer state.")] = Path("runs/small"),
    preset: Annotated[str, typer.Option(help=PRESET_HELP)] = "small",
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget; the learning rate decays over it.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer-step budget (with --minutes, whichever ends first).")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per micro-batch.")] = TRAIN_DEFAULTS.batch_size,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step, shared out over torchrun's processes (default: one per process).", show_default=False)] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = TRAIN_DEFAULTS.lr,
    optimizer: Annotated[str, typer.Option(help="adamw, or muon: orthogonalised momentum for the blocks' matrices (AdamW for the rest).")] = TRAIN_DEFAULTS.optimizer,
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear warmup.")] = TRAIN_DEFAULTS.warmup_steps,
    block_size: Annotated[int | None, typer.Option(help="Context length in tokens (default: the preset's).")] = None,
    fim_rate: Annotated[float, typer.Option(help="Share of documents turned into fill-in-the-middle examples.")] = TRAIN_DEFAULTS.fim_rate,
    mlp: Annotated[str, typer.Option(help="gelu, or swiglu: the Llama layout, which `export` writes for transformers, vLLM and llama.cpp.")] = TRAIN_DEFAULTS.mlp,
    init_from: Annotated[Path | None, typer.Option(help="Fine-tune this checkpoint or Hugging Face model folder (its shape replaces --preset; prepare the data with its tokenizer.json).")] = None,
    replay_data: Annotated[Path | None, typer.Option(help="Another `prepare` folder (same tokenizer) whose training split --replay mixes into each batch: general code, so that fine-tuning does not forget it.")] = None,
    replay: Annotated[float, typer.Option(help="Share of each batch drawn from --replay-data.")] = 0.5,
    eval_every: Annotated[int, typer.Option(help="Evaluate and write checkpoints every N steps.")] = TRAIN_DEFAULTS.eval_every,
    eval_tokens: Annotated[int, typer.Option(help="Validation tokens per evaluation.")] = TRAIN_DEFAULTS.eval_tokens,
    log_every: Annotated[int, typer.Option(help="Write the loss to metrics.jsonl every N steps.")] = TRAIN_DEFAULTS.log_every,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = TRAIN_DEFAULTS.seed,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint (budgets count the whole run).")] = False,
    overfit_batch: Annotated[bool, typer.Option(help="Sanity check: train on one batch; the loss should fall near zero.")] = False,
    fsdp: Annotated[bool, typer.Option(help="Under torchrun: shard weights, gradients and optimizer state over the processes (FSDP2), for models that do not fit one device.")] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the training step (faster on GPUs after a minute of compiling).")] = False,
) -> None:
    """Train the transformer; writes OUT/best and OUT/last checkpoints. Under torchrun: data-parallel over its processes."""
    from codecomplete.train.distributed import default_grad_accum, is_main_process, world_size
    from codecomplete.train.loop import load_train_config

    processes, note = world_size(), ""
    if resume and (out / "train_config.json").exists():
        cfg = load_train_config(out, minutes=minutes, max_steps=max_steps, device=device, fsdp=fsdp, compile=compile,
                                grad_accum=grad_accum)
        if grad_accum is None and cfg.grad_accum % processes:
            saved, cfg.grad_accum = cfg.grad_accum, default_grad_accum(processes, cfg.grad_accum)
            note = (f"this run was saved with --grad-accum {saved}, which does not split over {processes} processes: "
                    f"it goes on with {cfg.grad_accum}, so a step now takes {cfg.grad_accum * cfg.batch_size} sequences "
                    f"instead of {saved * cfg.batch_size}; pass --grad-accum to choose")
    else:
        if grad_accum is None:
            grad_accum = default_grad_accum(processes)
            if processes > 1:
                note = (f"--grad-accum not given: {grad_accum}, one micro-batch per process, so a step takes "
                        f"{grad_accum} x --batch-size {batch_size} = {grad_accum * batch_size} sequences and grows with "
                        "the processes; pass --grad-accum to fix it")
        cfg = TrainConfig(
            data=str(data), out=str(out), preset=preset, block_size=block_size, max_steps=max_steps, minutes=minutes,
            batch_size=batch_size, grad_accum=grad_accum, lr=lr, optimizer=optimizer, warmup_steps=warmup_steps, fim_rate=fim_rate,
            eval_every=eval_every, eval_tokens=eval_tokens, log_every=log_every, seed=seed, device=device,
            overfit_batch=overfit_batch, fsdp=fsdp, compile=compile, mlp=mlp, init_from=str(init_from) if init_from else None,
            replay_data=str(replay_data) if replay_data else None, replay=replay if replay_data else 0.0,
        )
    if note and is_main_process():  # once, not once per process
        console.print(f"[yellow]note: {note}", highlight=False, soft_wrap=True)
    run_train(cfg, resume=resume)


# -- export ----------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder trained with --mlp swiglu, e.g. runs/small/best.")],
    out: Annotated[Path, typer.Option(help="Folder to write: config.json, model.safetensors, tokenizer files.")],
) -> None:
    """Write a checkpoint as a Hugging Face model folder that transformers loads with no custom code."""
    from codecomplete.train.export import export_checkpoint

    path = export_checkpoint(checkpoint, out)
    console.print(f"wrote {path}: transformers' AutoModelForCausalLM and AutoTokenizer load it (see its README.md)", highlight=False)


# -- sample ----------------------------------------------------------------------------------
def run_sample(checkpoint: Path, prompt: str, n: int = 3, max_new_tokens: int = 256, temperature: float = 0.2, top_p: float = 0.95, seed: int | None = 0, device: str = "auto") -> list[str]:
    """Up to n distinct continuations of prompt, each ending where the block the prompt opens ends."""
    from codecomplete.engine.completion import CompletionEngine

    # The engine's prompt path heals the last token: a prompt that ends in a bare line break
    # would otherwise leave the model at a boundary it never saw before an indented body.
    engine = CompletionEngine.from_checkpoint(checkpoint, device, min_score=float("-inf"))
    candidates = engine.complete(prompt, "", n=n, max_new_tokens=max_new_tokens, multiline=True, max_lines=None,
                                 temperature=temperature, top_p=top_p, seed=seed)
    return [c.text for c in candidates]


@app.command("sample")
def sample_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/small/best.")],
    prompt: Annotated[str, typer.Option(help="Code to continue.")] = "def ",
    n: Annotated[int, typer.Option(help="How many completions.")] = 3,
    max_new_tokens: Annotated[int, typer.Option(help="Longest completion in tokens (at most half the model's context).")] = 256,
    temperature: Annotated[float, typer.Option(help="0 is greedy; higher is more varied (small models write broken code above ~0.5).")] = 0.2,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: keep the most likely tokens up to this mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Random seed, for repeatable samples.")] = TRAIN_DEFAULTS.seed,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
) -> None:
    """Print distinct completions of a prompt, each running to the end of the block it opens (greedy with --temperature 0)."""
    texts = run_sample(checkpoint, prompt, n, max_new_tokens, temperature, top_p, seed, device)
    for i, text in enumerate(texts):
        typer.echo(f"--- completion {i + 1} ---")
        typer.echo(prompt + text)
    if not texts:
        typer.echo("(no completion: the model wrote nothing after the prompt; an undertrained model often does)")


# -- complete --------------------------------------------------------------------------------
def run_complete(checkpoint: Path, file: Path, line: int, column: int | None, **options: Any) -> list:
    from codecomplete.engine.completion import CompletionEngine

    if not file.is_file():
        raise CodecompleteError(f"{file} is not a file; pass the Python file to complete in")
    text = file.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True) or [""]
    if not 1 <= line <= len(lines):
        raise CodecompleteError(f"--line {line} is outside {file} (1..{len(lines)})")
    body = lines[line - 1].rstrip("\r\n")
    col = len(body) if column is None else min(max(column - 1, 0), len(body))
    offset = sum(len(x) for x in lines[: line - 1]) + col
    engine = CompletionEngine.from_checkpoint(checkpoint, options.pop("device"))
    return engine.complete(text[:offset], text[offset:], **options), engine.stats


@app.command("complete")
def complete_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/small/best.")],
    file: Annotated[Path, typer.Argument(help="Python file to complete in.")],
    line: Annotated[int, typer.Option(help="Cursor line, 1-based.")],
    column: Annotated[int | None, typer.Option(help="Cursor column, 1-based (default: end of the line).")] = None,
    n: Annotated[int, typer.Option(help="How many ranked candidates.")] = 3,
    multiline: Annotated[bool, typer.Option(help="Complete the block, not just the line.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest candidate in tokens.")] = 48,
    temperature: Annotated[float, typer.Option(help="0 is greedy (n distinct first tokens).")] = 0.0,
    num_beams: Annotated[int, typer.Option(help="Beam search width (1: off).")] = 1,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
) -> None:
    """Show the engine's ranked completions at a cursor position in a file, as an editor would get them."""
    candidates, stats = run_complete(checkpoint, file, line, column, n=n, multiline=multiline, max_new_tokens=max_new_tokens,
                                     temperature=temperature, num_beams=num_beams, device=device)
    for i, c in enumerate(candidates, 1):
        typer.echo(f"--- {i}. score {c.score:.3f} ({c.reason}) ---")
        typer.echo(c.text)
    if not candidates:
        typer.echo("(no candidate above the confidence floor)")
    console.print(f"{stats.latency_ms:.0f} ms, {stats.prompt_tokens} prompt tokens, {stats.generated_tokens} generated")


# -- quickstart ------------------------------------------------------------------------------
QUICKSTART_PROMPT = "def read_json(path):\n"


@app.command("quickstart")
def quickstart_cmd(
    folders: Annotated[list[Path] | None, typer.Argument(help="Folders of Python code (default: this Python's standard library and site-packages).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for corpus/, tokenizer.json, data/ and run/.")] = Path("runs/quickstart"),
    minutes: Annotated[float, typer.Option(help="Training budget in minutes.")] = 10.0,
    preset: Annotated[str, typer.Option(help=PRESET_HELP)] = "small",
    vocab_size: Annotated[int, typer.Option(help="Tokenizer vocabulary size.")] = 16384,
    eval_cases: Annotated[int, typer.Option(help="Line-completion cases in the evaluation (a fifth as many function bodies).")] = 100,
    device: Annotated[str, typer.Option(help="auto, cuda, mps or cpu.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Delete --out and start over (default: resume the steps already done there).")] = False,
) -> None:
    """Collect, train a tokenizer, prepare, train, evaluate against the n-gram baseline and write the report; run it again to resume."""
    from codecomplete.train.eval_cli import run_eval
    from codecomplete.train.progress import pipeline
    from codecomplete.train.report import write_report
    from codecomplete.train.run_folder import SLOTS

    t0 = time.perf_counter()
    folders = folders or default_code_folders()
    if overwrite and out.exists():
        shutil.rmtree(out)
    data, run = out / "data", out / "run"
    cfg = TrainConfig(data=str(data), out=str(run), preset=preset, minutes=minutes, device=device)
    # Each step is skipped when its output exists, so running the same command again resumes;
    # training resumes from its last checkpoint, and evaluation follows whatever training did.
    steps = [
        ("collect", out / "corpus" / "summary.json", lambda: run_collect(folders, out / "corpus")),
        ("tokenizer", out / "tokenizer.json", lambda: run_tokenizer(out / "corpus", out / "tokenizer.json", vocab_size)),
        ("prepare", data / "meta.json", lambda: run_prepare(out / "corpus", out / "tokenizer.json", data)),
        ("train", None, lambda: run_train(cfg, resume=any((run / slot).exists() for slot, _ in SLOTS))),
        ("evaluate", None, lambda: run_eval(run / "best", data=data, device=device, line_cases=eval_cases, body_cases=max(eval_cases // 5, 1))),
        ("report", None, lambda: write_report(run)),
    ]
    with pipeline("quickstart", len(steps)) as (progress, overall):
        for i, (name, done, step) in enumerate(steps, 1):
            progress.update(overall, description=f"quickstart {i}/{len(steps)}: {name}")
            if done is None or not done.exists():
                step()
            progress.advance(overall)
    best = (run / "best").resolve()
    for text in run_sample(best, QUICKSTART_PROMPT, n=1, max_new_tokens=64, temperature=0.2, device=device):
        typer.echo(QUICKSTART_PROMPT + text)
    console.print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; report: {run / 'report.md'}. Point your editor at the model with the setting:")
    typer.echo(f'"codecomplete.checkpoint": "{best}"')


def main() -> None:
    try:
        app()
    except CodecompleteError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
