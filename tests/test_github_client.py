"""The GitHub client against the local fake: limits, retries, ETags, tokens."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest
from fake_github import FakeClock, FakeGitHub, FakeRepo, py_source

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import CachedResponse, GitHubClient, GitHubStatus, GitHubUnavailable
from codecomplete.train.github.limits import RateLimiter
from codecomplete.train.github.token import Token, load_token

TOKEN = "ghp_fake_token_1234567890"


class DictCache:
    def __init__(self) -> None:
        self.items: dict[str, CachedResponse] = {}

    def get_cached(self, url: str) -> CachedResponse | None:
        return self.items.get(url)

    def put_cached(self, url: str, cached: CachedResponse) -> None:
        self.items[url] = cached


def repo(name: str = "alpha/core") -> FakeRepo:
    return FakeRepo(name, "2015-01-05T00:00:00Z", {"pkg/a.py": py_source("a"), "pkg/b.py": py_source("b")})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client_for(gh: FakeGitHub, clock: FakeClock, token: str | None = TOKEN, **kwargs) -> GitHubClient:
    tok = Token(token, "$GITHUB_TOKEN") if token else None
    return GitHubClient(gh.url, tok, clock=clock.time, sleep=clock.sleep, **kwargs)


def times_of(gh: FakeGitHub, pattern: str) -> list[float]:
    return [s.at for s in gh.log if pattern in s.path]


# --- rate limits --------------------------------------------------------------------------------
def test_core_reset_is_waited_for_and_no_request_is_sent_before_it(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time, core_limit=3) as gh:
        client = client_for(gh, clock)
        client.check_token()
        start = clock.time()
        for _ in range(7):
            client.get_json("/repos/alpha/core/languages", cache=False)
        assert gh.violations == []
        times = times_of(gh, "/languages")
        assert times[:3] == [start] * 3
        assert times[3] >= start + 3600 and times[6] >= start + 7200  # two resets waited out
        assert client.limiter.waited_s >= 7200


def test_search_budget_is_separate_from_core(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time, search_limit=2) as gh:
        client = client_for(gh, clock)
        client.check_token()
        for _ in range(3):
            client.get_json("/search/repositories", {"q": "language:Python"}, cache=False)
        client.get_json("/repos/alpha/core/languages")
        assert gh.violations == []
        search = times_of(gh, "/search/")
        assert search[2] >= search[0] + 60  # search refills per minute
        assert times_of(gh, "/languages")[0] >= search[2]  # sequential here, but not held by search


def test_retry_after_is_honoured_before_the_next_request(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        gh.fault("/languages", "secondary", retry_after=45)
        client = client_for(gh, clock)
        assert client.get_json("/repos/alpha/core/languages") == {"Python": 2 * len(py_source("a"))}
        first, second = times_of(gh, "/languages")
        assert second >= first + 45
        assert gh.violations == []


@pytest.mark.parametrize("kind", ["429", "secondary-no-retry"])
def test_secondary_limit_without_usable_headers_waits_at_least_a_minute(clock: FakeClock, kind: str) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        gh.fault("/languages", kind, retry_after=60)
        client = client_for(gh, clock)
        client.get_json("/repos/alpha/core/languages")
        first, second = times_of(gh, "/languages")
        assert second >= first + 60
        assert gh.violations == []


def test_a_pause_holds_every_thread_of_the_client(clock: FakeClock) -> None:
    # One worker hears Retry-After; the others must wait it out too.
    limiter = RateLimiter(clock.time, clock.sleep)
    until = clock.time() + 30
    limiter.pause(until, "Retry-After")
    worker = threading.Thread(target=limiter.acquire, args=("core",))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and clock.time() >= until


def test_in_flight_requests_hold_the_last_slots(clock: FakeClock) -> None:
    limiter = RateLimiter(clock.time, clock.sleep)
    limiter.set_budget("core", remaining=1, reset=clock.time() + 3600)
    limiter.acquire("core")  # the last request of the hour is in flight
    second = threading.Thread(target=limiter.acquire, args=("core",))
    second.start()
    second.join(timeout=0.2)
    assert second.is_alive()  # no slot until the first is answered
    limiter.release("core", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock.time() + 3600)})
    second.join(timeout=10)
    assert not second.is_alive() and clock.time() >= 1_700_000_000 + 3600  # ...and then the reset


def test_waits_are_reported_with_their_end_time(clock: FakeClock) -> None:
    waits: list[tuple[float, str]] = []
    with FakeGitHub([repo()], clock=clock.time, core_limit=1) as gh:
        client = client_for(gh, clock, on_wait=lambda until, why: waits.append((until, why)))
        client.check_token()
        reset = clock.time() + 3600
        client.get_json("/repos/alpha/core/languages", cache=False)
        client.get_json("/repos/alpha/core/languages", cache=False)
        assert [why for _, why in waits] == ["core rate limit reset"]
        assert waits[0][0] >= reset


# --- failures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["502", "503", "500", "drop"])
def test_server_errors_and_dropped_connections_are_retried_with_backoff(clock: FakeClock, kind: str) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        gh.fault("/languages", kind, times=3)
        client = client_for(gh, clock)
        assert "Python" in client.get_json("/repos/alpha/core/languages")
        times = times_of(gh, "/languages")
        assert len(times) == 4
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps == sorted(gaps) and gaps[0] >= 1  # exponential backoff: 1, 2, 4 s
        assert client.stats["retries"] == 3


def test_persistent_failure_gives_up_with_one_line_naming_the_request(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        gh.fault("/languages", "502", times=100)
        client = client_for(gh, clock, max_attempts=4)
        with pytest.raises(GitHubUnavailable) as excinfo:
            client.get_json("/repos/alpha/core/languages")
        message = str(excinfo.value)
        assert "\n" not in message and "/repos/alpha/core/languages" in message and "resume" in message
        assert len(times_of(gh, "/languages")) == 4


def test_not_found_is_a_status_not_a_retry(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        with pytest.raises(GitHubStatus) as excinfo:
            client_for(gh, clock).get_json("/repos/nobody/nothing/languages")
        assert excinfo.value.status == 404
        assert len(gh.log) == 1


def test_a_cut_off_download_is_fetched_again(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        gh.fault("/_codeload/", "cut")
        client = client_for(gh, clock)

        def names(stream) -> list[str]:
            with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                return [m.name.partition("/")[2] for m in tar if m.isreg()]

        assert client.stream("/repos/alpha/core/tarball/main", names) == ["pkg/a.py", "pkg/b.py"]
        assert len(times_of(gh, "/_codeload/")) == 2
        assert gh.charged("/tarball/") == 1  # the download host costs no API budget


# --- conditional requests -----------------------------------------------------------------------
def test_304_is_served_from_the_cache_and_costs_nothing(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        client = client_for(gh, clock, cache=DictCache())
        first = client.get("/repos/alpha/core/languages")
        second = client.get("/repos/alpha/core/languages")
        assert second.from_cache and second.status == 200 and second.body == first.body
        assert [s.status for s in gh.log] == [200, 304]
        assert gh.charged() == 1
        assert client.stats["not_modified"] == 1


def test_a_cached_search_page_keeps_its_link_header(clock: FakeClock) -> None:
    repos = [FakeRepo(f"o/r{i}", f"2015-01-{i % 28 + 1:02d}T00:00:00Z", {}) for i in range(3)]
    with FakeGitHub(repos, clock=clock.time) as gh:
        client = client_for(gh, clock, cache=DictCache())
        params = {"q": "language:Python", "per_page": 1}
        link = client.get("/search/repositories", params).headers["link"]
        again = client.get("/search/repositories", params)
        assert again.from_cache and again.headers["link"] == link and 'rel="next"' in link


# --- tokens -------------------------------------------------------------------------------------
def test_a_rejected_token_is_named_by_its_source_never_its_value(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        client = client_for(gh, clock, token="ghp_wrong_secret_value")
        with pytest.raises(CodecompleteError) as excinfo:
            client.check_token()
    message = str(excinfo.value)
    assert message.startswith("the token in $GITHUB_TOKEN was rejected: Bad credentials;")
    assert "ghp_wrong_secret_value" not in message and "\n" not in message


def test_token_stays_out_of_reprs() -> None:
    token = Token("ghp_secret_value", "$GITHUB_TOKEN")
    client = GitHubClient("https://api.github.com", token)
    for text in (repr(token), str(token), repr(client), f"{token}"):
        assert "ghp_secret_value" not in text and "$GITHUB_TOKEN" in text


def test_anonymous_requests_send_no_authorization(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        client = client_for(gh, clock, token=None)
        assert client.anonymous
        assert client.check_token()["core"]["limit"] == 60
        client.get_json("/repos/alpha/core/languages")
        assert {s.identity for s in gh.log} == {"anonymous"}


def test_load_token_from_env_file_or_nothing(tmp_path: Path) -> None:
    assert repr(load_token("GH", environ={"GH": " ghp_x \n"})) == "Token(from $GH)"
    assert load_token("GH", environ={}) is None
    assert load_token("GH", environ={"GH": "  "}) is None
    file = tmp_path / "token.txt"
    file.write_text("ghp_from_file\n")
    token = load_token("GH", file, environ={"GH": "ghp_env"})
    assert token is not None and token.authorization() == "Bearer ghp_from_file"
    assert token.source == f"the file {file}"


def test_token_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CodecompleteError, match="cannot read the token file .*missing.txt.*--token-file"):
        load_token(file=tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(CodecompleteError, match="is empty"):
        load_token(file=empty)


def test_links_to_another_host_are_refused(clock: FakeClock) -> None:
    with FakeGitHub([repo()], clock=clock.time) as gh:
        client = client_for(gh, clock)
        with pytest.raises(CodecompleteError, match="check --api-url"):
            client.get("https://evil.example/search/repositories?page=2")
        assert gh.log == []


def test_bad_api_url_is_one_line() -> None:
    with pytest.raises(CodecompleteError, match="is not an http"):
        GitHubClient("api.github.com", None)


def test_stream_reads_an_inline_archive_too(clock: FakeClock) -> None:
    # Some servers answer the archive endpoint with the bytes instead of a redirect.
    with FakeGitHub([repo()], clock=clock.time) as gh:
        client = client_for(gh, clock)
        assert client.stream("/repos/alpha/core/languages", lambda s: s.read()) == io.BytesIO(
            client.get("/repos/alpha/core/languages", cache=False).body
        ).read()
