"""`codecomplete-train adapt`: the command (train/adapt.py does the work), what it shows, and its
`--events` for editors."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from codecomplete.train.adapt import Event, plan, run_adapt
from codecomplete.train.progress import console


def show(state: dict[str, Any], events: bool) -> None:
    """The comparison, what the fine-tune cost, and the setting to paste (or, for editors, the `done` event)."""
    from codecomplete.train.adapt_eval import print_comparison, summary

    best = (Path(state["config"]["out"]) / "best").resolve()
    t = state["trained"]
    print_comparison(state["comparison"])
    how = "stopped early: the held-out loss had stopped falling" if t["stopped_early"] else "the budget was spent"
    console.print(f"fine-tuned for {t['minutes']:.1f} min: {t['step']:,} steps, {t['tokens'] / 1e6:.2f}M tokens, batch "
                  f"{t['batch_size']} at learning rate {t['lr']:g} ({how})", highlight=False)
    if state["config"].get("blend", 1) < 1:
        console.print(f"written blended: {state['config']['blend']:g} of the fine-tuned weights, the rest the base's", highlight=False)
    if t["best_heldout_loss"] >= t["base_heldout_loss"]:
        console.print(f"[yellow]warning: no evaluation beat the base model's held-out loss ({t['base_heldout_loss']:.4f} against "
                      f"{t['best_heldout_loss']:.4f}): the base serves this project as well; try a lower --lr", highlight=False)
    if events:
        typer.echo(json.dumps({"event": "done", "checkpoint": str(best), "summary": summary(state["comparison"]), "trained": t}))
        return
    console.print("Point your editor at the adapted model with the setting:")
    typer.echo(f'"codecomplete.checkpoint": "{best}"')


def event_printer() -> Event:
    """Events as JSON lines on stdout for an editor's server; within a phase, at most two a second."""
    last = {"phase": "", "at": 0.0}

    def emit(event: dict[str, Any]) -> None:
        now = time.monotonic()
        if event.get("phase") == last["phase"] and now - last["at"] < 0.5:
            return
        last.update(phase=event.get("phase", ""), at=now)
        typer.echo(json.dumps(event))

    return emit


def add_adapt_command(app: typer.Typer) -> None:
    @app.command("adapt")
    def adapt_cmd(
        folders: Annotated[list[Path], typer.Argument(help="The project's folders (recursively, *.py; .gitignore, virtual environments and site-packages skipped).")],
        out: Annotated[Path, typer.Option(help="Run folder: corpus/, data/, best/ (the adapted checkpoint), last/, adapt.json.")] = Path("runs/adapted"),
        from_: Annotated[Path | None, typer.Option("--from", help="Checkpoint or Hugging Face folder to adapt (default: the shipped model); its tokenizer and shape are kept.", show_default=False)] = None,
        minutes: Annotated[float | None, typer.Option(help="Fine-tuning budget (collecting and the comparison come on top). [default: 10]", show_default=False)] = None,
        max_steps: Annotated[int | None, typer.Option(help="Optimizer-step budget (with --minutes, whichever ends first).")] = None,
        heldout: Annotated[float | None, typer.Option(help="Share of the project's code held out to stop on and to compare on: whole files, the newest by git history (else chosen by hash). [default: 0.1]", show_default=False)] = None,
        batch_size: Annotated[int | None, typer.Option(help="Sequences per step (default: 4 on a CPU, more on a GPU).", show_default=False)] = None,
        lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: 1e-4 on a CPU, more with a GPU's larger batch).", show_default=False)] = None,
        patience: Annotated[int | None, typer.Option(help="Stop after this many held-out evaluations without improvement. [default: 3]", show_default=False)] = None,
        eval_every: Annotated[int | None, typer.Option(help="Steps between held-out evaluations. [default: 50]", show_default=False)] = None,
        eval_cases: Annotated[int | None, typer.Option(help="Line-completion cases per set in the comparison (a fifth as many function bodies; 0: bits per byte only). [default: 100]", show_default=False)] = None,
        general: Annotated[Path | None, typer.Option(help="General held-out set, to show forgetting: a corpus or a folder of Python code (default: a sample of this Python's standard library).", show_default=False)] = None,
        replay: Annotated[float | None, typer.Option(help="Share of each batch drawn from this Python's standard library, so the model keeps what it knew of other code (0: the project alone). [default: 0.5]", show_default=False)] = None,
        blend: Annotated[float | None, typer.Option(help="Share of the fine-tuned weights in the checkpoint written, the rest the base's: lower forgets less of other code and learns less of the project; 1 writes the fine-tuned weights as they are. [default: 0.85]", show_default=False)] = None,
        keep_tests: Annotated[bool | None, typer.Option("--keep-tests", help="Learn from the project's test files too (dropped by default, as in collect).", show_default=False)] = None,
        device: Annotated[str | None, typer.Option(help="auto, cuda, mps or cpu. [default: auto]", show_default=False)] = None,
        overwrite: Annotated[bool, typer.Option(help="Start over in --out (default: resume the adaptation there).")] = False,
        events: Annotated[bool, typer.Option(help="Progress as JSON lines on stdout, for an editor (the language server's codecomplete.adapt).")] = False,
    ) -> None:
        """Fine-tune a checkpoint on your project and compare it with the base; run it again to resume."""
        cfg, base = plan(folders, out, from_, overwrite, minutes=minutes, max_steps=max_steps, heldout=heldout, batch_size=batch_size,
                         lr=lr, patience=patience, eval_every=eval_every, eval_cases=eval_cases, replay=replay, blend=blend, keep_tests=keep_tests,
                         device=device, general=str(general.resolve()) if general else None)
        state = run_adapt(cfg, base, overwrite, event_printer() if events else None)
        show(state, events)
