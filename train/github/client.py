"""HTTP for the GitHub REST API: authentication, rate limits, retries and conditional requests.

Standard library only (http.client): one keep-alive connection per worker thread.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import logging
import tarfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.limits import RateLimiter, WaitCallback
from codecomplete.train.github.token import Token

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "codecomplete-scraper"
MAX_ATTEMPTS = 8  # per request, for 5xx and dropped connections: ~2 minutes of backoff in all
MAX_BACKOFF_S = 60.0
SECONDARY_WAIT_S = 60.0  # GitHub: without Retry-After, wait at least a minute, then longer
TIMEOUT_S = 60.0
# A dropped connection or a cut-off body: worth retrying, unlike an HTTP error status.
TRANSIENT_ERRORS = (OSError, http.client.HTTPException, EOFError, zlib.error)
# ...and, while streaming an archive, the read error tarfile makes of a cut-off download.
STREAM_ERRORS = (*TRANSIENT_ERRORS, tarfile.TarError)

T = TypeVar("T")


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    from_cache: bool = False

    def json(self) -> Any:
        return json.loads(self.body)

    def message(self) -> str:
        """GitHub's one-line explanation of an error, or the bare status."""
        try:
            text = str(json.loads(self.body).get("message", ""))
        except (ValueError, AttributeError):
            text = ""
        return (text.splitlines() or [f"HTTP {self.status}"])[0][:200]


class GitHubStatus(Exception):
    """GitHub answered a request about one thing with an error retrying will not fix."""

    def __init__(self, status: int, message: str, path: str) -> None:
        super().__init__(f"{path}: HTTP {status} {message}")
        self.status = status


class GitHubUnavailable(CodecompleteError):
    """Server errors or dropped connections outlasted every retry."""


@dataclass(frozen=True)
class CachedResponse:
    etag: str
    link: str  # a 304 need not repeat the Link header, and pagination follows it
    body: bytes


class ResponseCache(Protocol):
    def get_cached(self, url: str) -> CachedResponse | None: ...
    def put_cached(self, url: str, cached: CachedResponse) -> None: ...


class GitHubClient:
    def __init__(
        self,
        api_url: str,
        token: Token | None,
        cache: ResponseCache | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: WaitCallback | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        base = urlsplit(api_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.netloc:
            raise CodecompleteError(
                f"--api-url {api_url!r} is not an http(s) URL; pass e.g. https://api.github.com"
            )
        self.api_url = base.geturl()
        self._base = base
        self._token = token
        self._cache = cache
        self._clock = clock
        self._sleep = sleep
        self.limiter = RateLimiter(clock, sleep, on_wait)
        self._max_attempts = max_attempts
        self._local = threading.local()  # per thread: connections, request counter
        self._stats_lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"GitHubClient({self.api_url}, {self._token!r})"

    @property
    def anonymous(self) -> bool:
        return self._token is None

    def check_token(self) -> dict[str, Any]:
        """GET /rate_limit (free): a bad token fails here, and the budgets are known up front."""
        response = self.get("/rate_limit", cache=False)
        if response.status == 404:
            return {}  # GitHub Enterprise with rate limiting switched off
        if response.status != 200:
            raise CodecompleteError(
                f"{self.api_url}/rate_limit answered HTTP {response.status} ({response.message()}); "
                "check --api-url"
            )
        resources = response.json().get("resources", {})
        for name, budget in resources.items():
            self.limiter.set_budget(name, int(budget["remaining"]), float(budget["reset"]))
        return resources

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, cache: bool = True
    ) -> Any:
        response = self.get(path, params, cache)
        if response.status != 200:
            raise GitHubStatus(response.status, response.message(), self._short(path))
        return response.json()

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, cache: bool = True
    ) -> Response:
        """One API answer after waiting out limits and retrying failures; redirects not followed.

        With `cache`, a stored ETag is sent as If-None-Match and a 304 (which GitHub does not
        count against the budget) is answered from the stored body.
        """
        url = self._url(path, params)
        cached = self._cache.get_cached(url) if cache and self._cache is not None else None
        headers = self._headers(url, etag=cached.etag if cached else None)
        response = self._request(url, headers)
        if response.status == 304 and cached is not None:
            self._count("not_modified")
            headers = {**response.headers, "link": cached.link}
            return Response(200, headers, cached.body, from_cache=True)
        etag = response.headers.get("etag")
        if cache and response.status == 200 and etag and self._cache is not None:
            link = response.headers.get("link", "")
            self._cache.put_cached(url, CachedResponse(etag, link, response.body))
        return response

    def stream(self, path: str, consume: Callable[[IO[bytes]], T]) -> T:
        """GET `path` (an archive endpoint answering with a redirect) and feed the body to
        `consume` as it downloads; a cut-off download is fetched again from the start."""
        response = self.get(path, cache=False)
        if response.status == 200:
            return consume(io.BytesIO(response.body))
        if response.status not in (301, 302, 303, 307, 308) or "location" not in response.headers:
            raise GitHubStatus(response.status, response.message(), self._short(path))
        url = urljoin(self._url(path), response.headers["location"])
        failures = 0
        while True:
            conn = self._new_connection(urlsplit(url))
            try:
                conn.request("GET", _target(urlsplit(url)), headers=self._headers(url))
                body = conn.getresponse()
                if 400 <= body.status < 500:  # gone since the redirect: retrying will not help
                    raise GitHubStatus(body.status, body.reason, self._short(path))
                if body.status != 200:
                    raise http.client.HTTPException(f"HTTP {body.status}")
                result = consume(body)
                self._count("downloads")
                return result
            except STREAM_ERRORS as e:
                failures = self._backoff(url, failures, type(e).__name__)
            finally:
                conn.close()

    @contextmanager
    def counting(self) -> Iterator[Counter[str]]:
        """Count the API requests this thread sends inside the block (per-repository cost)."""
        counter: Counter[str] = Counter()
        self._local.counter = counter
        try:
            yield counter
        finally:
            self._local.counter = None

    # -- one request, its limits and retries ---------------------------------------------------
    def _request(self, url: str, headers: dict[str, str]) -> Response:
        resource = self._resource(url)
        failures = secondary = 0
        while True:
            if resource:
                self.limiter.acquire(resource)
            try:
                response = self._send(url, headers)
            except TRANSIENT_ERRORS as e:
                if resource:
                    self.limiter.release(resource, None)
                failures = self._backoff(url, failures, type(e).__name__)
                continue
            if resource:
                self.limiter.release(resource, response.headers)
            self._count("requests")
            if response.status == 401:
                raise self._rejected(response)
            if self._rate_limited(response, secondary):
                secondary += 1
                continue
            if response.status >= 500:
                failures = self._backoff(url, failures, f"HTTP {response.status}")
                continue
            return response

    def _rate_limited(self, response: Response, secondary: int) -> bool:
        """Whether this is a rate-limit answer; if so the limiter now holds the next request."""
        if response.status not in (403, 429):
            return False
        now = self._clock()
        message = response.message()
        lowered = message.lower()
        retry_after = response.headers.get("retry-after", "").strip()
        if retry_after.isdigit():
            self.limiter.pause(now + int(retry_after), f"Retry-After: {message}")
        elif response.headers.get("x-ratelimit-remaining") == "0":
            # The limiter learnt remaining=0 and the reset from these headers; a reset already
            # past on our clock means the clocks disagree, so wait a minute instead.
            if float(response.headers.get("x-ratelimit-reset", 0)) <= now:
                self.limiter.pause(now + SECONDARY_WAIT_S, "rate limit (clock skew)")
        elif response.status == 429 or "secondary rate limit" in lowered or "abuse" in lowered:
            wait = min(SECONDARY_WAIT_S * 2**secondary, 16 * SECONDARY_WAIT_S)
            self.limiter.pause(now + wait, "secondary rate limit")
        else:
            return False  # a plain 403: access to this one thing is forbidden
        self._count("rate_limited")
        return True

    def _backoff(self, url: str, failures: int, why: str) -> int:
        failures += 1
        self._count("retries")
        if failures >= self._max_attempts:
            raise GitHubUnavailable(
                f"GitHub failed {failures} times in a row on {self._short(url)} ({why}); "
                "check the network or https://www.githubstatus.com and run the same command to resume"
            )
        delay = min(2.0 ** (failures - 1), MAX_BACKOFF_S)
        log.debug("retrying %s in %.0f s after %s", self._short(url), delay, why)
        self.limiter.sleep_for(delay, f"retry after {why}")
        return failures

    def _rejected(self, response: Response) -> CodecompleteError:
        who = f"the token in {self._token.source}" if self._token else "an anonymous request"
        return CodecompleteError(
            f"{who} was rejected: {response.message()}; create a new token "
            "(read-only access to public repositories is enough) and pass it again"
        )

    # -- HTTP -------------------------------------------------------------------------------
    def _send(self, url: str, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        conn = self._connection(parts)
        try:
            conn.request("GET", _target(parts), headers=headers)
            raw = conn.getresponse()
            body = raw.read()
        except BaseException:
            self._drop_connection(parts)
            raise
        if raw.will_close:
            self._drop_connection(parts)
        response_headers = {name.lower(): value for name, value in raw.getheaders()}
        if response_headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        log.debug("GET %s -> %d", self._short(url), raw.status)
        return Response(raw.status, response_headers, body)

    def _headers(self, url: str, etag: str | None = None) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "Accept-Encoding": "gzip",
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": API_VERSION,
        }
        # The token goes to the API host only, never to a redirect target elsewhere.
        if self._token is not None and urlsplit(url).netloc == self._base.netloc:
            headers["Authorization"] = self._token.authorization()
        if etag:
            headers["If-None-Match"] = etag
        return headers

    def _connection(self, parts: Any) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        key = (parts.scheme, parts.netloc)
        if key not in pool:
            pool[key] = self._new_connection(parts)
        return pool[key]

    def _drop_connection(self, parts: Any) -> None:
        pool = self._local.__dict__.get("pool", {})
        conn = pool.pop((parts.scheme, parts.netloc), None)
        if conn is not None:
            conn.close()

    @staticmethod
    def _new_connection(parts: Any) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.netloc, timeout=TIMEOUT_S)

    # -- URLs and bookkeeping ---------------------------------------------------------------
    def _url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        if path.startswith(("http://", "https://")):
            # Link headers give absolute URLs; following one elsewhere would leak the token.
            if urlsplit(path).netloc != self._base.netloc:
                raise CodecompleteError(
                    f"GitHub linked to {urlsplit(path).netloc}, not {self._base.netloc}; "
                    "check --api-url"
                )
            url = path
        else:
            url = self._base.geturl() + path
        return f"{url}?{urlencode(params)}" if params else url

    def _resource(self, url: str) -> str | None:
        """The rate-limit bucket a URL spends: search, core, or none (/rate_limit is free)."""
        path = urlsplit(url).path[len(self._base.path) :]
        if path.startswith("/rate_limit"):
            return None
        return "search" if path.startswith("/search/") else "core"

    def _short(self, url: str) -> str:
        return url[len(self.api_url) :] if url.startswith(self.api_url) else urlsplit(url).path

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1
        counter = getattr(self._local, "counter", None)
        if counter is not None:
            counter[key] += 1


def _target(parts: Any) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
