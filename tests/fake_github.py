"""A local HTTP server on 127.0.0.1 that behaves like the GitHub REST API, for the scraper tests.

What it does as GitHub does: repository search with `total_count`, Link-header pagination and
the 1,000-result cap (422 past it); languages; git trees (recursive, `truncated` for big ones);
blobs (base64); tarballs through a redirect to a separate download host path, built as real
.tar.gz archives in memory; ETags answered 304 without spending budget; core and search rate
limits per token (or anonymous) with X-RateLimit-* headers; 401 for unknown tokens.

What it adds for tests: a shared fake clock (no real sleeping), a search cap other than 1,000
(as a GitHub Enterprise server may have), injected faults (5xx, dropped connections, cut-off
downloads, secondary limits with or without Retry-After, 429, search answers cut short with
`incomplete_results: true`), a log of
every request, and `violations`: requests sent while the budget was spent or before a
Retry-After had passed — a correct client makes none. (A Retry-After binds the connection it
was sent on: the client's other connections may have requests in flight, or be a moment from
hearing of it, and real GitHub tolerates that too.)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SEARCH_CAP = 1000
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


class FakeClock:
    """Epoch seconds that move only when someone sleeps: waits cost no real time."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Submodule:
    commit: str = "a" * 40


@dataclass
class FakeRepo:
    full_name: str
    created_at: str  # ISO 8601, e.g. 2015-01-10T12:00:00Z
    files: dict[str, bytes | Symlink | Submodule]
    stars: int = 150
    language: str | None = "Python"  # the primary language search filters on
    languages: dict[str, int] | None = None  # default: bytes of .py files vs the rest
    license: str | None = "MIT"
    fork: bool = False
    is_template: bool = False
    default_branch: str = "main"
    truncated: bool = False  # the recursive root tree answers truncated: true
    deleted: bool = False  # still listed by search; 404 everywhere else

    def language_bytes(self) -> dict[str, int]:
        if self.languages is not None:
            return self.languages
        out: dict[str, int] = {}
        for path, data in self.files.items():
            if isinstance(data, bytes):
                name = "Python" if path.endswith(".py") else "Text"
                out[name] = out.get(name, 0) + len(data)
        return out


@dataclass
class Fault:
    pattern: str  # regex searched in the request path
    kind: str  # 500 502 503 drop cut secondary secondary-no-retry 429 incomplete
    times: int = 1
    retry_after: int = 30


@dataclass
class Seen:
    """One request as the server saw it."""

    at: float  # fake-clock epoch seconds
    path: str
    query: str
    status: int
    resource: str | None  # core, search; None for free endpoints
    charged: bool  # spent budget
    identity: str  # the token, or "anonymous"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    drop: bool = False  # close the connection without answering
    cut: bool = False  # promise the whole body, send half, hang up


@dataclass
class _Pause:
    until: float
    conn: int  # the connection told to wait


@dataclass
class _Bucket:
    limit: int
    window: float
    remaining: int = 0
    reset: float = 0.0


@dataclass
class FakeGitHub:
    repos: list[FakeRepo]
    clock: Callable[[], float] = time.time
    tokens: tuple[str, ...] = ("ghp_fake_token_1234567890",)
    core_limit: int = 5000
    search_limit: int = 30
    anonymous_limit: int = 60
    search_cap: int = SEARCH_CAP  # results one search query pages through
    log: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    on_request: Callable[[str], None] | None = None  # called with each path, outside the lock

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._pauses: dict[str, _Pause] = {}  # identity -> the Retry-After it was last given
        self._server: _Server | None = None

    # -- running ---------------------------------------------------------------------------
    def __enter__(self) -> FakeGitHub:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fault(self, pattern: str, kind: str, times: int = 1, retry_after: int = 30) -> None:
        with self._lock:
            self.faults.append(Fault(pattern, kind, times, retry_after))

    def charged(self, pattern: str = "") -> int:
        """Requests that spent budget, optionally only those whose path matches `pattern`."""
        with self._lock:
            return sum(1 for s in self.log if s.charged and re.search(pattern, s.path))

    # -- one request -----------------------------------------------------------------------
    def handle(self, path: str, query: str, headers: dict[str, str], conn: int = 0) -> Answer:
        """The answer to one request; `conn` tells the client's connections apart."""
        with self._lock:
            return self._handle(path, query, headers, conn)

    def _handle(self, path: str, query: str, headers: dict[str, str], conn: int) -> Answer:
        now = self.clock()
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if path.startswith("/_codeload/"):  # the download host: no API budget, no auth needed
            fault = self._take_fault(path)
            status, body = self._codeload(path)
            self._record(now, path, query, status, None, False, "-")
            cut = fault is not None and fault.kind == "cut"
            return Answer(status, {"Content-Type": "application/x-gzip"}, body, cut=cut)
        identity = "anonymous"
        auth = headers.get("authorization", "")
        if auth:
            token = auth.split(" ", 1)[-1]
            if token not in self.tokens:
                self._record(now, path, query, 401, None, False, "bad token")
                return _json(401, {"message": "Bad credentials"})
            identity = token
        if path == "/rate_limit":
            self._record(now, path, query, 200, None, False, identity)
            resources = {name: self._bucket_json(identity, name, now) for name in ("core", "search")}
            return _json(200, {"resources": resources, "rate": resources["core"]})
        resource = "search" if path.startswith("/search/") else "core"
        pause = self._pauses.get(identity)
        if pause is not None and now < pause.until and conn == pause.conn:
            self.violations.append(f"{path} at {now:.0f}, before Retry-After ended at {pause.until:.0f}")
        fault = self._take_fault(path)
        if fault is not None and fault.kind not in ("cut", "incomplete"):
            return self._fault_answer(fault, now, path, query, resource, identity, conn)
        bucket = self._bucket(identity, resource, now)
        if bucket.remaining <= 0:
            self.violations.append(f"{path} at {now:.0f}: {resource} budget spent until {bucket.reset:.0f}")
            self._record(now, path, query, 403, resource, False, identity)
            answer = _json(403, {"message": "API rate limit exceeded."})
            answer.headers.update(self._rate_headers(bucket, resource))
            return answer
        answer = self._route(path, params, incomplete=fault is not None and fault.kind == "incomplete")
        is_json = answer.status == 200 and answer.headers.get("Content-Type") == "application/json"
        etag = '"' + hashlib.sha1(answer.body).hexdigest() + '"' if is_json else ""
        if etag and headers.get("if-none-match") == etag:
            answer = Answer(304, {}, b"")  # free, as on GitHub
        else:
            bucket.remaining -= 1
        if etag:
            answer.headers["ETag"] = etag
        self._record(now, path, query, answer.status, resource, answer.status != 304, identity)
        answer.headers.update(self._rate_headers(bucket, resource))
        return answer

    def _fault_answer(
        self, fault: Fault, now: float, path: str, query: str, resource: str, identity: str, conn: int
    ) -> Answer:
        named = {"drop": 0, "secondary": 403, "secondary-no-retry": 403, "429": 429}
        status = named[fault.kind] if fault.kind in named else int(fault.kind)
        self._record(now, path, query, status, resource, False, identity)
        if fault.kind == "drop":
            return Answer(0, {}, b"", drop=True)
        if status >= 500:
            return _json(status, {"message": "Server Error"})
        if fault.kind == "secondary-no-retry":
            self._pauses[identity] = _Pause(now + 60, conn)  # GitHub: wait at least a minute
            return _json(403, {"message": SECONDARY_MESSAGE})
        self._pauses[identity] = _Pause(now + fault.retry_after, conn)
        answer = _json(status, {"message": SECONDARY_MESSAGE})
        answer.headers["Retry-After"] = str(fault.retry_after)
        return answer

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and re.search(fault.pattern, path):
                fault.times -= 1
                return fault
        return None

    def _record(self, *args: Any) -> None:
        self.log.append(Seen(*args))

    # -- rate limits -------------------------------------------------------------------------
    def _bucket(self, identity: str, resource: str, now: float) -> _Bucket:
        key = (identity, resource)
        if key not in self._buckets:
            limit = self.search_limit if resource == "search" else (
                self.anonymous_limit if identity == "anonymous" else self.core_limit
            )
            self._buckets[key] = _Bucket(limit, 60.0 if resource == "search" else 3600.0)
        bucket = self._buckets[key]
        if now >= bucket.reset:  # a new window: the budget refills
            bucket.remaining, bucket.reset = bucket.limit, now + bucket.window
        return bucket

    def _bucket_json(self, identity: str, resource: str, now: float) -> dict[str, int]:
        b = self._bucket(identity, resource, now)
        return {"limit": b.limit, "remaining": b.remaining, "reset": int(-(-b.reset // 1)), "used": b.limit - b.remaining}

    @staticmethod
    def _rate_headers(bucket: _Bucket, resource: str) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": str(int(-(-bucket.reset // 1))),  # whole seconds, rounded up
            "X-RateLimit-Used": str(bucket.limit - bucket.remaining),
            "X-RateLimit-Resource": resource,
        }

    # -- the API -----------------------------------------------------------------------------
    def _route(self, path: str, params: dict[str, str], incomplete: bool = False) -> Answer:
        if path == "/search/repositories":
            return self._search(params, incomplete)
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        repo = self._repo(m.group(1)) if m else None
        if repo is None:
            return _json(404, {"message": "Not Found"})
        rest = m.group(2) or ""
        if rest == "":
            return _json(200, _repo_json(repo))
        if rest == "/languages":
            return _json(200, repo.language_bytes())
        if m2 := re.fullmatch(r"/git/trees/(.+)", rest):
            return self._tree(repo, m2.group(1), params.get("recursive") in ("1", "true"))
        if m2 := re.fullmatch(r"/git/blobs/([0-9a-f]{40})", rest):
            data = _blobs(repo).get(m2.group(1))
            if data is None:
                return _json(404, {"message": "Not Found"})
            encoded = base64.encodebytes(data).decode()  # GitHub wraps base64 at 60 columns too
            return _json(200, {"sha": m2.group(1), "size": len(data), "encoding": "base64", "content": encoded})
        if m2 := re.fullmatch(r"/tarball/(.+)", rest):
            location = f"{self.url}/_codeload/{repo.full_name}/legacy.tar.gz/{m2.group(1)}"
            return Answer(302, {"Location": location, "Content-Type": "text/html"}, b"")
        return _json(404, {"message": "Not Found"})

    def _repo(self, full_name: str) -> FakeRepo | None:
        return next((r for r in self.repos if r.full_name == full_name and not r.deleted), None)

    def _search(self, params: dict[str, str], incomplete: bool = False) -> Answer:
        """One page; `incomplete`: the search timed out and the page holds half its items."""
        per_page = min(int(params.get("per_page", 30)), 100)
        page = int(params.get("page", 1))
        if (page - 1) * per_page >= self.search_cap:
            return _json(422, {"message": f"Only the first {self.search_cap} search results are available"})
        matches = sorted(
            (r for r in self.repos if _matches(r, params.get("q", ""))),
            key=lambda r: (r.created_at, r.full_name),
        )
        reachable = min(len(matches), self.search_cap)
        items = matches[(page - 1) * per_page : min(page * per_page, reachable)]
        if incomplete:
            items = items[: len(items) // 2]
        last = max(1, -(-reachable // per_page))
        links = []
        if page < last:
            links.append(f'<{self._search_url(params, page + 1)}>; rel="next"')
            links.append(f'<{self._search_url(params, last)}>; rel="last"')
        if page > 1:
            links.append(f'<{self._search_url(params, 1)}>; rel="first"')
        answer = _json(
            200,
            {"total_count": len(matches), "incomplete_results": incomplete, "items": [_repo_json(r) for r in items]},
        )
        if links:
            answer.headers["Link"] = ", ".join(links)
        return answer

    def _search_url(self, params: dict[str, str], page: int) -> str:
        return f"{self.url}/search/repositories?" + urlencode({**params, "page": page})

    def _tree(self, repo: FakeRepo, ref: str, recursive: bool) -> Answer:
        trees, root = _trees(repo)
        sha = root if ref == repo.default_branch else ref
        if sha not in trees:
            return _json(404, {"message": "Not Found"})
        entries = _flatten(trees, sha, "") if recursive else trees[sha]
        truncated = recursive and repo.truncated and sha == root
        if truncated:
            entries = entries[: len(entries) // 3]  # GitHub returns what fits, then gives up
        return _json(200, {"sha": sha, "tree": entries, "truncated": truncated})

    def _codeload(self, path: str) -> tuple[int, bytes]:
        m = re.fullmatch(r"/_codeload/([^/]+/[^/]+)/legacy\.tar\.gz/(.+)", path)
        repo = self._repo(m.group(1)) if m else None
        if repo is None:
            return 404, b"Not Found"
        return 200, build_tarball(repo)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client killed mid-answer (the kill-and-resume test) is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as GitHub

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and delayed
        # ACKs add ~40 ms to every request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        fake: FakeGitHub = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        if fake.on_request is not None:
            fake.on_request(parts.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = fake.handle(parts.path, parts.query, headers, conn=self.client_address[1])
        if answer.drop:
            self.close_connection = True  # hang up without a word
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))  # promised in full even when cut
        self.end_headers()
        self.wfile.write(answer.body[: len(answer.body) // 2] if answer.cut else answer.body)
        if answer.cut:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass  # the fake's own log is the record


# -- GitHub's data, derived from a FakeRepo -----------------------------------------------------
def git_sha(kind: str, data: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def _blobs(repo: FakeRepo) -> dict[str, bytes]:
    out = {}
    for data in repo.files.values():
        if isinstance(data, Symlink):
            data = data.target.encode()
        if isinstance(data, bytes):
            out[git_sha("blob", data)] = data
    return out


def _trees(repo: FakeRepo) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Every folder's direct entries by tree sha, and the root's sha."""
    folders: dict[str, dict[str, Any]] = {"": {}}
    for path, data in repo.files.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]), {})
        folders["/".join(parts[:-1])][parts[-1]] = data
    for folder in list(folders):
        if folder:
            parent, _, name = folder.rpartition("/")
            folders[parent][name] = folder  # a str value names a subfolder
    trees: dict[str, list[dict[str, Any]]] = {}

    def build(folder: str) -> str:
        entries = []
        for name, data in sorted(folders[folder].items()):
            if isinstance(data, str):
                entries.append({"path": name, "mode": "040000", "type": "tree", "sha": build(data)})
            elif isinstance(data, Submodule):
                entries.append({"path": name, "mode": "160000", "type": "commit", "sha": data.commit})
            else:
                raw = data.target.encode() if isinstance(data, Symlink) else data
                mode = "120000" if isinstance(data, Symlink) else "100644"
                entries.append({"path": name, "mode": mode, "type": "blob", "sha": git_sha("blob", raw), "size": len(raw)})
        sha = git_sha("tree", json.dumps(entries, sort_keys=True).encode())
        trees[sha] = entries
        return sha

    return trees, build("")


def _flatten(trees: dict[str, list[dict[str, Any]]], sha: str, prefix: str) -> list[dict[str, Any]]:
    out = []
    for entry in trees[sha]:
        out.append({**entry, "path": prefix + entry["path"]})
        if entry["type"] == "tree":
            out += _flatten(trees, entry["sha"], prefix + entry["path"] + "/")
    return out


def build_tarball(repo: FakeRepo) -> bytes:
    """The .tar.gz GitHub serves: one top folder owner-repo-commit/, a pax header, the files."""
    _, root = _trees(repo)
    top = f"{repo.full_name.replace('/', '-')}-{root[:7]}/"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": root}) as tar:
        tar.addfile(_dir(top))
        for path, data in sorted(repo.files.items()):
            if isinstance(data, Submodule):
                tar.addfile(_dir(top + path + "/"))  # git archive leaves an empty folder
            elif isinstance(data, Symlink):
                info = tarfile.TarInfo(top + path)
                info.type, info.linkname = tarfile.SYMTYPE, data.target
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(top + path)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def _repo_json(repo: FakeRepo) -> dict[str, Any]:
    owner, name = repo.full_name.split("/")
    size = sum(len(d) for d in repo.files.values() if isinstance(d, bytes))
    return {
        "id": int(hashlib.sha1(repo.full_name.encode()).hexdigest()[:8], 16),
        "name": name,
        "full_name": repo.full_name,
        "owner": {"login": owner},
        "private": False,
        "fork": repo.fork,
        "is_template": repo.is_template,
        "archived": False,
        "created_at": repo.created_at,
        "stargazers_count": repo.stars,
        "language": repo.language,
        "size": -(-size // 1024),  # KB, as GitHub reports it
        "default_branch": repo.default_branch,
        "license": {"key": repo.license.lower(), "spdx_id": repo.license, "name": repo.license} if repo.license else None,
    }


def _matches(repo: FakeRepo, q: str) -> bool:
    for term in q.split():
        key, _, value = term.partition(":")
        if key == "language" and (repo.language or "").lower() != value.lower():
            return False
        if key == "stars" and value.startswith(">=") and repo.stars < int(value[2:]):
            return False
        if key == "fork" and value == "false" and repo.fork:
            return False
        if key == "created":
            low, _, high = value.partition("..")
            created = _moment(repo.created_at)
            if not _moment(low) <= created <= _moment(high):
                return False
    return True


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _json(status: int, payload: Any) -> Answer:
    return Answer(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def py_source(name: str, n_bytes: int = 1500) -> bytes:
    """Plain, realistic Python of at least n_bytes that passes the corpus filters, distinct per name."""
    lines = [f'"""Helpers for {name}."""', "", "import os", ""]
    i = 0
    while len("\n".join(lines)) < n_bytes:
        lines += [f"def {name}_path_{i}(root: str) -> str:", f"    return os.path.join(root, '{name}', str({i}))", ""]
        i += 1
    return ("\n".join(lines) + "\n").encode()
