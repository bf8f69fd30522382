"""Scrape GitHub into a corpus: discover by month, fetch repositories, write shards, resume.

Repositories are fetched `concurrency` at a time but judged and written in discovery order,
so which copy of a file shared by several repositories is kept does not depend on timing, and
a killed-and-rerun scrape ends with the same corpus as one that ran through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import GitHubClient, GitHubUnavailable
from codecomplete.train.github.config import ScrapeConfig
from codecomplete.train.github.discover import SearchStats, discover, month_windows
from codecomplete.train.github.repos import RepoFiles, RepoRef, fetch_repo, precheck
from codecomplete.train.github.sink import CorpusSink
from codecomplete.train.github.state import RepoOutcome, ScrapeState
from codecomplete.train.github.token import Token

log = logging.getLogger(__name__)

Event = dict[str, Any]
# Repositories failing in a row (after the client's own retries) mean GitHub or the network
# is down rather than one repository being broken: stop, and let a rerun resume.
MAX_FAILURES_IN_A_ROW = 3
SLEEP_CHUNK_S = 1.0  # waits are cut into chunks so a stopping scrape never sleeps on


@dataclass
class ScrapeSummary:
    repos: dict[str, int]  # all runs into this corpus, by status: done, skipped, failed, pending
    skipped: dict[str, int]  # by reason
    files_stored: int  # all runs
    files_this_run: int
    rejected_this_run: dict[str, int]
    requests: int  # this run, 304s included
    not_modified: int
    waited_s: float
    shards: list[str] = field(default_factory=list)
    windows_searched: int = 0  # this run: creation windows paged to their end
    incomplete_windows: int = 0  # ...whose search stayed incomplete: searched again next run


class _Stopped(Exception):
    """Raised in a worker's wait once the scrape is stopping."""


def scrape(
    cfg: ScrapeConfig,
    token: Token | None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_event: Callable[[Event], None] | None = None,
) -> ScrapeSummary:
    """Scrape into `cfg.out` until the windows are done or `max_repos` reached; see the module doc."""
    _check(cfg)
    emit = on_event or (lambda event: None)
    windows = month_windows(cfg.since, cfg.until)
    stop = threading.Event()
    search = SearchStats()
    state = ScrapeState(cfg.out)
    try:
        client = GitHubClient(
            cfg.api_url,
            token,
            cache=state,
            clock=clock,
            sleep=_stoppable(sleep, stop),
            on_wait=lambda until, why: emit({"event": "wait", "until": until, "reason": why}),
        )
        if token is None:
            log.warning(
                "no GitHub token: anonymous requests get 60 per hour; set $GITHUB_TOKEN "
                "(or --token-env/--token-file) for 5,000"
            )
        budgets = client.check_token()
        sink = CorpusSink(state, cfg.filters, cfg.batch_files, cfg.batch_seconds)
        emit({"event": "start", "budgets": budgets, "repos": state.repo_counts()})
        try:
            _Run(cfg, client, state, sink, emit, stop, search).run(windows)
        finally:  # whatever stopped the run, what was fetched and judged is kept
            if (shard := sink.flush()) is not None:
                emit({"event": "shard", "name": shard[0], "rows": shard[1]})
            state.summary().write(cfg.out)
        corpus = state.summary()
        return ScrapeSummary(
            repos=state.repo_counts(),
            skipped=state.skip_reasons(),
            files_stored=corpus.files_kept,
            files_this_run=sink.files_stored,
            rejected_this_run=dict(sink.rejected),
            requests=client.stats["requests"],
            not_modified=client.stats["not_modified"],
            waited_s=client.limiter.waited_s,
            shards=corpus.shards,
            windows_searched=search.windows,
            incomplete_windows=search.incomplete,
        )
    finally:
        state.close()


class _Run:
    def __init__(
        self,
        cfg: ScrapeConfig,
        client: GitHubClient,
        state: ScrapeState,
        sink: CorpusSink,
        emit: Callable[[Event], None],
        stop: threading.Event,
        search: SearchStats,
    ) -> None:
        self.cfg, self.client, self.state, self.sink, self.emit = cfg, client, state, sink, emit
        self.stop, self.search = stop, search
        counts = state.repo_counts()
        self.looked_at = counts.get("done", 0) + counts.get("skipped", 0)  # toward max_repos
        self.handled: set[str] = set()  # this run: still "pending" in the state until a flush
        self.failures_in_a_row = 0

    def run(self, windows: list) -> None:
        pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="scrape")
        try:
            for window in windows:
                if self._limit_reached():
                    break
                added = discover(self.client, self.state, window, self.cfg.min_stars, self.search)
                self.emit(
                    {
                        "event": "window",
                        "window": window.label(),
                        "added": added,
                        "queued": sum(self.state.repo_counts().values()),
                    }
                )
                # Repositories left queued by an earlier run go first: they were found first.
                self._process(pool, self.state.queued_repos())
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _process(self, pool: ThreadPoolExecutor, refs: list[RepoRef]) -> None:
        todo = iter([ref for ref in refs if ref.full_name not in self.handled])
        ahead: deque[tuple[RepoRef, Future | str]] = deque()
        while True:
            while len(ahead) < 2 * self.cfg.concurrency and not self._limit_reached():
                ref = next(todo, None)
                if ref is None:
                    break
                self.handled.add(ref.full_name)
                self.looked_at += 1
                reason = precheck(ref, self.cfg)
                ahead.append((ref, reason or pool.submit(self._fetch, ref)))
            if not ahead:
                return
            ref, work = ahead.popleft()  # in discovery order, whatever finishes first
            if isinstance(work, str):
                outcome = self.sink.add(ref, RepoFiles(skip=work), requests=0)
            else:
                outcome = self._take(ref, work)
            self.emit(
                {
                    "event": "repo",
                    "repo": ref.full_name,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "files": outcome.files,
                    "requests": outcome.requests,
                }
            )
            if self.sink.due() and (shard := self.sink.flush()) is not None:
                self.emit({"event": "shard", "name": shard[0], "rows": shard[1]})

    def _fetch(self, ref: RepoRef) -> tuple[RepoFiles | GitHubUnavailable, int]:
        with self.client.counting() as count:
            try:
                fetched: RepoFiles | GitHubUnavailable = fetch_repo(
                    self.client, ref, self.cfg, self.sink.known
                )
            except GitHubUnavailable as e:
                fetched = e
        # What GitHub counts against the budget: conditional requests answered 304 are free.
        return fetched, count["requests"] - count["not_modified"]

    def _take(self, ref: RepoRef, work: Future) -> RepoOutcome:
        fetched, requests = work.result()
        if isinstance(fetched, GitHubUnavailable):
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise fetched
            log.warning("%s failed (%s); it is tried again on the next run", ref.full_name, fetched)
            return self.sink.fail(ref, "unavailable", requests)
        self.failures_in_a_row = 0
        return self.sink.add(ref, fetched, requests)

    def _limit_reached(self) -> bool:
        return self.cfg.max_repos is not None and self.looked_at >= self.cfg.max_repos


def _stoppable(sleep: Callable[[float], None], stop: threading.Event) -> Callable[[float], None]:
    def wait(seconds: float) -> None:
        while seconds > 0:
            if stop.is_set():
                raise _Stopped()
            chunk = min(seconds, SLEEP_CHUNK_S)
            sleep(chunk)
            seconds -= chunk

    return wait


def _check(cfg: ScrapeConfig) -> None:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CodecompleteError(f"{cfg.out} is a file; choose a folder for --out")
    if not 0.0 <= cfg.python_share <= 1.0:
        raise CodecompleteError(f"--python-share {cfg.python_share} is not a share; use 0 to 1")
    if cfg.concurrency < 1:
        raise CodecompleteError(f"--concurrency {cfg.concurrency} must be at least 1")
    if cfg.batch_files < 1:
        raise CodecompleteError(f"--batch-files {cfg.batch_files} must be at least 1")
    if cfg.filters.min_bytes > cfg.filters.max_bytes:
        raise CodecompleteError(
            f"--min-bytes {cfg.filters.min_bytes} is above --max-bytes {cfg.filters.max_bytes}; swap them"
        )
    if cfg.max_repos is not None and cfg.max_repos < 1:
        raise CodecompleteError(f"--max-repos {cfg.max_repos} must be at least 1")
