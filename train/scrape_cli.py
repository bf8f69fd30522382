"""`codecomplete-train scrape ...`: gather Python code from the web into a corpus."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler

from codecomplete.train.filters import KEEP_TESTS_HELP, FilterConfig
from codecomplete.train.github.config import DEFAULT_API_URL, ScrapeConfig
from codecomplete.train.github.scrape import ScrapeSummary, scrape
from codecomplete.train.github.token import Token, load_token
from codecomplete.train.progress import console, make_progress

scrape_app = typer.Typer(no_args_is_help=True)


@scrape_app.callback()
def scrape_group() -> None:
    """Gather Python code from the web into a corpus (Parquet shards, like `collect`)."""
    # A callback keeps `github` a subcommand even while it is the only one.

DEFAULTS = ScrapeConfig(out=Path("corpus"))


def run_scrape_github(
    cfg: ScrapeConfig,
    token: Token | None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ScrapeSummary:
    """Scrape with a progress display; waits for rate limits show the time left until reset."""
    with make_progress("repos") as progress, _warnings_to_console():
        task = progress.add_task("scrape: starting", total=None)
        shown = {"until": 0.0, "reason": "", "label": "scrape"}  # the wait in progress, the window

        def on_event(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "start":
                counts = event["repos"]
                progress.update(task, completed=counts.get("done", 0) + counts.get("skipped", 0))
                if core := event["budgets"].get("core"):
                    reset = datetime.fromtimestamp(core["reset"]).strftime("%H:%M")
                    console.print(f"GitHub budget: {core['remaining']:,} of {core['limit']:,} requests left this hour (resets {reset})")
            elif kind == "window":
                shown["label"] = f"scrape {event['window']}"
                progress.update(task, total=event["queued"], description=shown["label"])
            elif kind == "repo":
                progress.advance(task)
            elif kind == "wait":
                shown.update(until=event["until"], reason=event["reason"])

        def sleep_showing(seconds: float) -> None:
            # Called in chunks of a second or less, so the countdown stays current.
            left = shown["until"] - clock()
            if left > 0:
                progress.update(task, description=f"waiting {_duration(left)} for {shown['reason']}")
            sleep(seconds)
            if shown["until"] - clock() <= 0:
                progress.update(task, description=shown["label"])

        summary = scrape(cfg, token, clock=clock, sleep=sleep_showing, on_event=on_event)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items(), key=lambda kv: -kv[1])) or "none"
    console.print(
        f"{summary.files_this_run:,} files stored this run, {summary.files_stored:,} in the corpus; "
        f"repositories: {summary.repos.get('done', 0):,} done, {sum(summary.skipped.values()):,} skipped ({skipped}), "
        f"{summary.repos.get('pending', 0) + summary.repos.get('failed', 0):,} left"
    )
    console.print(
        f"{summary.requests:,} requests ({summary.not_modified:,} answered from cache), "
        f"{_duration(summary.waited_s)} waiting for rate limits"
    )
    if summary.incomplete_windows:
        console.print(
            f"[yellow]{summary.incomplete_windows:,} of {summary.windows_searched:,} search windows stayed "
            "incomplete (GitHub's search timed out): repositories created then may be missing; "
            "run the same command later to search them again",
            highlight=False,
        )
    else:
        console.print(f"searched {summary.windows_searched:,} creation windows, none incomplete", highlight=False)
    console.print(f"wrote {len(summary.shards)} shard(s), summary.json and scrape.sqlite in {cfg.out}; run the same command to continue")
    return summary


@scrape_app.command("github")
def github_cmd(
    out: Annotated[Path, typer.Option(help="Corpus folder: Parquet shards, summary.json and the resume state scrape.sqlite.")],
    min_stars: Annotated[int, typer.Option(help="Only repositories with at least this many stars.")] = DEFAULTS.min_stars,
    since: Annotated[str, typer.Option(help="First creation month searched, YYYY-MM (or YYYY-MM-DD).")] = DEFAULTS.since,
    until: Annotated[str, typer.Option(help="Last creation month searched, YYYY-MM (default: this month).")] = DEFAULTS.until,
    python_share: Annotated[float, typer.Option(help="Share of a repository's bytes that must be Python (0-1).")] = DEFAULTS.python_share,
    licenses: Annotated[str, typer.Option(help="Comma-separated SPDX ids to allow, e.g. MIT,Apache-2.0,BSD-3-Clause (default: any).")] = "",
    min_bytes: Annotated[int, typer.Option(help="Skip files smaller than this.")] = DEFAULTS.filters.min_bytes,
    max_bytes: Annotated[int, typer.Option(help="Skip files larger than this.")] = DEFAULTS.filters.max_bytes,
    keep_tests: Annotated[bool, typer.Option(help=KEEP_TESTS_HELP)] = False,
    max_repos: Annotated[int | None, typer.Option(help="Stop after looking at this many repositories (all runs together).")] = None,
    concurrency: Annotated[int, typer.Option(help="Repositories fetched at once.")] = DEFAULTS.concurrency,
    api_url: Annotated[str, typer.Option(help="API root: GitHub Enterprise is https://HOST/api/v3.")] = DEFAULT_API_URL,
    token_env: Annotated[str, typer.Option(help="Environment variable holding the token (none set: anonymous, 60 requests/hour).")] = "GITHUB_TOKEN",
    token_file: Annotated[Path | None, typer.Option(help="Read the token from this file instead.")] = None,
    batch_files: Annotated[int, typer.Option(help="Files per shard; a kill loses at most one unfinished batch.")] = DEFAULTS.batch_files,
    tarball_max_mb: Annotated[float, typer.Option(help="Repositories larger than this are fetched file by file, not as one tarball.")] = DEFAULTS.tarball_max_mb,
) -> None:
    """Scrape Python repositories from GitHub within its rate limits; rerun to resume."""
    cfg = ScrapeConfig(
        out=out, api_url=api_url, min_stars=min_stars, since=since, until=until, python_share=python_share,
        licenses=tuple(name.strip() for name in licenses.split(",") if name.strip()),
        filters=FilterConfig(min_bytes=min_bytes, max_bytes=max_bytes, drop_tests=not keep_tests), max_repos=max_repos,
        concurrency=concurrency, batch_files=batch_files, tarball_max_mb=tarball_max_mb,
    )
    run_scrape_github(cfg, load_token(token_env, token_file))


@contextmanager
def _warnings_to_console() -> Iterator[None]:
    """Show the scraper's warnings above the progress display, for this command only."""
    logger = logging.getLogger("codecomplete.train.github")
    handler = RichHandler(console=console, show_time=False, show_path=False, level=logging.WARNING)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.WARNING
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"
