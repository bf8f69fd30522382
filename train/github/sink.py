"""Fetched files -> judged rows -> one Parquet shard per batch, recorded with its repositories.

The same checks as `collect` (size, NUL, UTF-8, exact duplicates by git blob sha, quality
filters) via `train.collect.judge`; a blob sha judged once, in any repository, is not judged
or stored again.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codecomplete.train.collect import ROW_GROUP_ROWS, SCHEMA, git_blob_sha, judge
from codecomplete.train.filters import FilterConfig
from codecomplete.train.github.repos import RepoFiles, RepoRef
from codecomplete.train.github.state import TMP_PREFIX, RepoOutcome, ScrapeState


class CorpusSink:
    def __init__(
        self,
        state: ScrapeState,
        filters: FilterConfig,
        batch_files: int,
        batch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._filters = filters
        self._batch_files = batch_files
        self._batch_seconds = batch_seconds
        self._clock = clock
        self._lock = threading.Lock()  # workers ask `known` while the main thread adds
        self.rejected: Counter[str] = Counter()  # this run, by reason, duplicates included
        self.files_stored = 0  # this run
        self._new_batch()

    def known(self, sha: str) -> bool:
        """Whether content with this blob sha was judged already (this batch or before)."""
        with self._lock:
            if sha in self._outcomes:
                return True
        return self._state.blob_known(sha)

    def add(self, ref: RepoRef, fetched: RepoFiles, requests: int) -> RepoOutcome:
        if fetched.skip:
            return self._record(RepoOutcome(ref, "skipped", fetched.skip, 0, requests))
        kept = 0
        for path, data in fetched.files:
            sha = git_blob_sha(data)  # of the bytes received, whatever the tree said
            if self.known(sha):
                self.rejected["duplicate"] += 1
                continue
            reason, content, _ = judge(data, self._filters, self._batch_shas)
            with self._lock:
                self._outcomes[sha] = reason or "stored"
            if reason is not None:
                self.rejected[reason] += 1
                continue
            kept += 1
            self._bytes += len(data)
            self._rows.append(
                {
                    "repo": ref.full_name,
                    "path": path,
                    "sha": sha,
                    "license": ref.license,
                    "stars": ref.stars,
                    "size": len(data),
                    "content": content,
                }
            )
        self.files_stored += kept
        return self._record(RepoOutcome(ref, "done", "", kept, requests))

    def fail(self, ref: RepoRef, reason: str, requests: int) -> RepoOutcome:
        return self._record(RepoOutcome(ref, "failed", reason, 0, requests))

    def due(self) -> bool:
        if len(self._rows) >= self._batch_files:
            return True
        return bool(self._repos) and self._clock() - self._started >= self._batch_seconds

    def flush(self) -> tuple[str, int] | None:
        """Write the batch's shard and commit it with its outcomes; (shard name, rows) or None."""
        if not self._repos and not self._rows:
            return None
        shard = None
        if self._rows:
            name = self._state.next_shard_name()
            self._state.begin_shard(name)
            write_shard(self._state.out, name, self._rows)
            shard = (name, len(self._rows), self._bytes)
        self._state.commit(shard, self._repos, self._outcomes)
        self._new_batch()
        return (shard[0], shard[1]) if shard else None

    def _record(self, outcome: RepoOutcome) -> RepoOutcome:
        self._repos.append(outcome)
        return outcome

    def _new_batch(self) -> None:
        with self._lock:
            self._rows: list[dict[str, object]] = []
            self._repos: list[RepoOutcome] = []
            self._outcomes: dict[str, str] = {}  # blob sha -> "stored" or the reject reason
            self._batch_shas: set[str] = set()  # judge's own duplicate check, within the batch
            self._bytes = 0
            self._started = self._clock()


def write_shard(folder: Path, name: str, rows: list[dict[str, object]]) -> None:
    """Write `rows` to folder/name atomically: a reader sees the whole shard or none of it."""
    tmp = folder / f"{TMP_PREFIX}{name}"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # the rename below must not land before the data
    os.replace(tmp, folder / name)
