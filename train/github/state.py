"""The scrape's memory, in SQLite next to the corpus: what is done, so a rerun resumes.

Shards and the rows of `repos`/`blobs` that describe them change together: a shard is recorded
as begun before its file appears and as done in the same transaction that marks its
repositories done. On opening, a begun-but-not-done shard is deleted, so a kill at any moment
leaves neither a duplicate row nor a repository marked done whose files are missing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.collect import SHARD_GLOB, CollectSummary
from codecomplete.train.github.client import CachedResponse
from codecomplete.train.github.repos import RepoRef

STATE_NAME = "scrape.sqlite"
TMP_PREFIX = ".tmp-"  # hidden, so corpus readers never see a half-written shard
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS repos (
    full_name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,          -- discovery order: the order repos are processed in
    ref TEXT NOT NULL,             -- RepoRef as JSON
    status TEXT NOT NULL DEFAULT 'pending',  -- pending, done, skipped, failed
    reason TEXT,
    files INTEGER,
    requests INTEGER
);
CREATE INDEX IF NOT EXISTS repos_by_status ON repos (status, seq);
CREATE TABLE IF NOT EXISTS blobs (sha BLOB PRIMARY KEY, outcome TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, done INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS etags (
    url TEXT PRIMARY KEY, etag TEXT NOT NULL, link TEXT NOT NULL, body BLOB NOT NULL
);
"""


@dataclass
class RepoOutcome:
    ref: RepoRef
    status: str  # done, skipped or failed (failed ones are tried again on the next run)
    reason: str = ""
    files: int = 0
    requests: int = 0


class ScrapeState:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self._lock = threading.RLock()  # one connection, shared by the worker threads
        try:
            self._db = sqlite3.connect(
                out / STATE_NAME, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process kill
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise CodecompleteError(
                f"{out / STATE_NAME} is not a readable scrape state ({e}); "
                "move it away to start over or choose another --out"
            ) from None
        self._check_version()
        self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- search windows and the queue of repositories ---------------------------------------
    def window_done(self, key: str) -> bool:
        return self._one("SELECT 1 FROM windows WHERE key = ?", (key,)) is not None

    def finish_window(self, key: str, refs: Iterable[RepoRef] = (), done: bool = True) -> int:
        """Queue the repositories a window listed and mark it done, together. Returns new ones.

        A window whose search stayed incomplete queues what it found but is not marked done,
        so the next run searches it again.
        """
        with self._lock, self._transaction():
            seq = self._one("SELECT COALESCE(MAX(seq), 0) FROM repos")[0]
            added = 0
            for ref in refs:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO repos (full_name, seq, ref) VALUES (?, ?, ?)",
                    (ref.full_name, seq + 1, json.dumps(asdict(ref))),
                )
                seq += cur.rowcount
                added += cur.rowcount
            if done:
                self._db.execute("INSERT OR IGNORE INTO windows (key) VALUES (?)", (key,))
        return added

    def queued_repos(self) -> list[RepoRef]:
        """Repositories not finished yet (failed ones included), in discovery order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ref FROM repos WHERE status IN ('pending', 'failed') ORDER BY seq"
            ).fetchall()
        return [RepoRef(**json.loads(ref)) for (ref,) in rows]

    def repo_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM repos GROUP BY status").fetchall()
        return dict(rows)

    def skip_reasons(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, COUNT(*) FROM repos WHERE status = 'skipped' GROUP BY reason"
            ).fetchall()
        return dict(rows)

    # -- blobs and shards --------------------------------------------------------------------
    def blob_known(self, sha: str) -> bool:
        """Whether this content was judged before: stored in a shard, or rejected."""
        return self._one("SELECT 1 FROM blobs WHERE sha = ?", (bytes.fromhex(sha),)) is not None

    def next_shard_name(self) -> str:
        n = self._one("SELECT COUNT(*) FROM shards")[0]
        return f"shard-{n:05d}.parquet"

    def begin_shard(self, name: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO shards (name, rows, bytes, done) VALUES (?, 0, 0, 0)", (name,)
            )

    def commit(
        self,
        shard: tuple[str, int, int] | None,
        repos: list[RepoOutcome],
        blobs: dict[str, str],
    ) -> None:
        """Make one batch durable: its shard (name, rows, bytes), repo outcomes, blob outcomes."""
        with self._lock, self._transaction():
            if shard is not None:
                name, rows, n_bytes = shard
                self._db.execute(
                    "UPDATE shards SET rows = ?, bytes = ?, done = 1 WHERE name = ?",
                    (rows, n_bytes, name),
                )
            self._db.executemany(
                "UPDATE repos SET status = ?, reason = ?, files = ?, requests = ? WHERE full_name = ?",
                [(r.status, r.reason, r.files, r.requests, r.ref.full_name) for r in repos],
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO blobs (sha, outcome) VALUES (?, ?)",
                [(bytes.fromhex(sha), outcome) for sha, outcome in blobs.items()],
            )

    def summary(self) -> CollectSummary:
        """The corpus as `collect` describes one, from what the state records."""
        with self._lock:
            shards = self._db.execute(
                "SELECT name, rows, bytes FROM shards WHERE done = 1 ORDER BY name"
            ).fetchall()
            rejected = dict(
                self._db.execute(
                    "SELECT outcome, COUNT(*) FROM blobs WHERE outcome != 'stored' GROUP BY outcome ORDER BY outcome"
                ).fetchall()
            )
        kept = sum(rows for _, rows, _ in shards)
        return CollectSummary(
            files_seen=kept + sum(rejected.values()),
            files_kept=kept,
            bytes_kept=sum(b for _, _, b in shards),
            rejected=rejected,
            shards=[name for name, _, _ in shards],
        )

    # -- conditional-request cache (the client's ResponseCache) -------------------------------
    def get_cached(self, url: str) -> CachedResponse | None:
        row = self._one("SELECT etag, link, body FROM etags WHERE url = ?", (url,))
        return CachedResponse(row[0], row[1], zlib.decompress(row[2])) if row else None

    def put_cached(self, url: str, cached: CachedResponse) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO etags (url, etag, link, body) VALUES (?, ?, ?, ?)",
                (url, cached.etag, cached.link, zlib.compress(cached.body)),
            )

    # -- internals ---------------------------------------------------------------------------
    def _check_version(self) -> None:
        row = self._one("SELECT value FROM meta WHERE key = 'format_version'")
        if row is None:
            with self._lock:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('format_version', ?)",
                    (str(FORMAT_VERSION),),
                )
        elif row[0] != str(FORMAT_VERSION):
            raise CodecompleteError(
                f"{self.out / STATE_NAME} has format {row[0]}, this version reads {FORMAT_VERSION}; "
                "scrape into a new --out"
            )

    def _recover(self) -> None:
        """Undo what a killed run left half done; refuse a folder holding someone else's shards."""
        for tmp in self.out.glob(TMP_PREFIX + "*"):
            tmp.unlink()
        with self._lock, self._transaction():
            for (name,) in self._db.execute("SELECT name FROM shards WHERE done = 0").fetchall():
                (self.out / name).unlink(missing_ok=True)
            self._db.execute("DELETE FROM shards WHERE done = 0")
            known = {name for (name,) in self._db.execute("SELECT name FROM shards")}
        foreign = sorted(p.name for p in self.out.glob(SHARD_GLOB) if p.name not in known)
        if foreign:
            raise CodecompleteError(
                f"{self.out} holds {len(foreign)} shard(s) this scrape did not write ({foreign[0]}); "
                "choose an empty folder for --out"
            )

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
