"""Discovery: creation-date windows, splitting past the search cap (whatever it is), complete pagination,
searches GitHub answers incomplete."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from fake_github import FakeClock, FakeGitHub, FakeRepo, _matches

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import GitHubClient
from codecomplete.train.github.discover import (
    INCOMPLETE_TRIES,
    SEARCH_CAP,
    SearchStats,
    Window,
    discover,
    month_windows,
)
from codecomplete.train.github.state import STATE_NAME, ScrapeState
from codecomplete.train.github.token import Token

TOKEN = "ghp_fake_token_1234567890"


def bare_repos(n: int, day: str = "2015-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}Z", prefix: str = "o") -> list[FakeRepo]:
    """n repositories spread over March 2015 (or all at one moment if `day` has no fields)."""
    out = []
    for i in range(n):
        created = day.format(d=i % 28 + 1, h=i % 24, m=(i * 7) % 60, s=(i * 13) % 60)
        out.append(FakeRepo(f"{prefix}{i}/r", created, {}))
    return out


def run_discover(gh: FakeGitHub, clock: FakeClock, out: Path, window: Window,
                 stats: SearchStats | None = None) -> tuple[int, ScrapeState]:
    state = ScrapeState(out)  # also the ETag cache, as in a scrape
    client = GitHubClient(gh.url, Token(TOKEN, "$GITHUB_TOKEN"), cache=state, clock=clock.time, sleep=clock.sleep)
    return discover(client, state, window, min_stars=100, stats=stats), state


def monthly_repos(counts: dict[str, int]) -> list[FakeRepo]:
    """counts[YYYY-MM] repositories created in that month, each at its own second."""
    return [repo for month, n in counts.items()
            for repo in bare_repos(n, day=month + "-{d:02d}T{h:02d}:{m:02d}:{s:02d}Z", prefix=f"m{month}-")]


def search_pages(gh: FakeGitHub) -> list[dict[str, str]]:
    return [{k: v[-1] for k, v in parse_qs(s.query).items()} for s in gh.log if s.path == "/search/repositories"]


# --- windows ------------------------------------------------------------------------------------
def test_month_windows_cover_the_range_without_gaps_or_overlaps() -> None:
    windows = month_windows("2015-01", "2015-03")
    assert [w.label() for w in windows] == ["2015-01", "2015-02", "2015-03"]
    assert windows[0].start == datetime(2015, 1, 1, tzinfo=UTC)
    assert windows[1].end == datetime(2015, 2, 28, 23, 59, 59, tzinfo=UTC)
    for a, b in zip(windows, windows[1:]):
        assert (b.start - a.end).total_seconds() == 1


def test_month_windows_take_days_and_default_to_this_month() -> None:
    windows = month_windows("2015-01-20", "2015-02-03")
    assert windows[0].start.day == 20 and windows[-1].end.day == 3
    assert month_windows("2024-11", "", today=date(2024, 12, 9))[-1].label() == "2024-12"


@pytest.mark.parametrize("since,until,match", [("2015-13", "", "--since"), ("last year", "", "--since"), ("2016-01", "2015-01", "before")])
def test_bad_dates_are_one_line(since: str, until: str, match: str) -> None:
    with pytest.raises(CodecompleteError, match=match):
        month_windows(since, until)


def test_split_halves_are_disjoint_and_cover_the_window() -> None:
    w = Window(datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 1, 31, 23, 59, 59, tzinfo=UTC))
    first, second = w.split()
    assert first.start == w.start and second.end == w.end
    assert (second.start - first.end).total_seconds() == 1
    one_second = Window(w.start, w.start)
    assert one_second.split() is None
    assert "created:2015-01-01T00:00:00Z..2015-01-31T23:59:59Z" in w.query(100)


# --- search -------------------------------------------------------------------------------------
def test_every_page_is_read(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeGitHub(bare_repos(250), clock=clock.time) as gh:
        added, state = run_discover(gh, clock, tmp_path, month_windows("2015-03", "2015-03")[0])
        assert added == 250
        assert {r.full_name for r in state.queued_repos()} == {f"o{i}/r" for i in range(250)}
        assert [p.get("page", "1") for p in search_pages(gh)] == ["1", "2", "3"]


def test_a_window_over_the_cap_is_split_until_every_part_fits(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeGitHub(bare_repos(2100), clock=clock.time, search_limit=1000) as gh:
        added, state = run_discover(gh, clock, tmp_path, month_windows("2015-03", "2015-03")[0])
        assert added == 2100
        assert len({r.full_name for r in state.queued_repos()}) == 2100
        statuses = {s.status for s in gh.log if s.path.startswith("/search/")}
        assert statuses == {200}  # never asked past the cap (GitHub would answer 422)
        for page in search_pages(gh):
            assert int(page.get("page", 1)) * int(page["per_page"]) <= SEARCH_CAP


def test_search_rate_limit_is_respected_while_splitting(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeGitHub(bare_repos(1100), clock=clock.time, search_limit=5) as gh:
        added, _ = run_discover(gh, clock, tmp_path, month_windows("2015-03", "2015-03")[0])
        assert added == 1100 and gh.violations == []
        assert clock.time() - 1_700_000_000 >= 60  # at least one search-minute waited out


def test_more_results_in_one_second_than_the_cap_keeps_the_first_1000(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    crowd = bare_repos(1200, day="2015-03-10T10:00:00Z")
    with FakeGitHub(crowd, clock=clock.time) as gh, caplog.at_level(logging.WARNING):
        moment = datetime(2015, 3, 10, 10, 0, 0, tzinfo=UTC)
        added, _ = run_discover(gh, clock, tmp_path, Window(moment, moment))
        assert added == SEARCH_CAP
        assert "1200 repositories were created at 2015-03-10T10:00:00Z" in caplog.text
        assert {s.status for s in gh.log if s.path.startswith("/search/")} == {200}


def test_a_done_window_costs_nothing_and_an_unfinished_one_is_replayed_from_etags(tmp_path: Path) -> None:
    clock = FakeClock()
    window = month_windows("2015-03", "2015-03")[0]
    with FakeGitHub(bare_repos(250), clock=clock.time) as gh:
        run_discover(gh, clock, tmp_path, window)[1].close()
        n = len(gh.log)
        added, state = run_discover(gh, clock, tmp_path, window)
        assert added == 0 and len(gh.log) == n  # done: not even probed
        state.close()
        # A kill before the window was marked done: the pages come back 304, free.
        with sqlite3.connect(tmp_path / STATE_NAME) as db:
            db.execute("DELETE FROM windows")
        added, state = run_discover(gh, clock, tmp_path, window)
        replay = gh.log[n:]
        assert [s.status for s in replay] == [304, 304, 304]
        assert not any(s.charged for s in replay)
        assert added == 0 and len(state.queued_repos()) == 250


# --- a server that reaches fewer results than GitHub ----------------------------------------------
def test_a_search_cap_of_20_with_months_of_30_and_more_loses_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    counts = {"2015-01": 30, "2015-02": 45, "2015-03": 61}
    repos = monthly_repos(counts)
    stats = SearchStats()
    with FakeGitHub(repos, clock=clock.time, search_cap=20) as gh:
        for window in month_windows("2015-01", "2015-03"):
            run_discover(gh, clock, tmp_path, window, stats)[1].close()
        assert {s.status for s in gh.log if s.path.startswith("/search/")} == {200}
    state = ScrapeState(tmp_path)
    assert {r.full_name for r in state.queued_repos()} == {r.full_name for r in repos}
    assert all(state.window_done(w.query(100)) for w in month_windows("2015-01", "2015-03"))
    assert stats.incomplete == 0 and stats.windows >= 3 + 2 + 3  # each month split into parts of 20 or fewer


def test_the_reach_a_server_shows_is_learnt_so_later_windows_split_before_paging(tmp_path: Path) -> None:
    clock = FakeClock()
    repos = monthly_repos({"2015-01": 400, "2015-02": 400})
    stats = SearchStats()
    with FakeGitHub(repos, clock=clock.time, search_cap=150) as gh:
        january, february = month_windows("2015-01", "2015-02")
        run_discover(gh, clock, tmp_path, january, stats)[1].close()
        assert stats.reach == 150
        n = len(gh.log)
        added, state = run_discover(gh, clock, tmp_path, february, stats)
        assert added == 400 and len(state.queued_repos()) == 800
        # February's 400 were split at once: only queries the server reaches to the end were paged.
        paged = [p["q"] for p in search_pages(gh)[-(len(gh.log) - n):] if "page" in p]
        assert paged and all(sum(_matches(r, q) for r in repos) <= 150 for q in paged)


# --- searches GitHub answers incomplete -----------------------------------------------------------
def test_an_incomplete_page_is_asked_again_with_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeGitHub(bare_repos(250), clock=clock.time) as gh:
        gh.fault("^/search/", "incomplete", times=2)
        stats = SearchStats()
        added, state = run_discover(gh, clock, tmp_path, month_windows("2015-03", "2015-03")[0], stats)
        assert [p.get("page", "1") for p in search_pages(gh)] == ["1", "1", "1", "2", "3"]
        assert added == 250 and stats.incomplete == 0
        assert state.window_done(month_windows("2015-03", "2015-03")[0].query(100))
        assert clock.time() - 1_700_000_000 >= 5 + 10  # waited before each new ask


def test_a_page_that_stays_incomplete_is_kept_with_a_warning_and_searched_again_next_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    window = month_windows("2015-03", "2015-03")[0]
    with FakeGitHub(bare_repos(250), clock=clock.time) as gh, caplog.at_level(logging.WARNING):
        gh.fault("^/search/", "incomplete", times=INCOMPLETE_TRIES)
        stats = SearchStats()
        added, state = run_discover(gh, clock, tmp_path, window, stats)
        assert added == 200 and stats.incomplete == 1  # the first page kept half its 100
        assert "kept 200 of the 250 it counted, so 50 or more may be missing" in caplog.text
        assert not state.window_done(window.query(100))
        state.close()
        added, state = run_discover(gh, clock, tmp_path, window)  # the next run
        assert added == 50 and len(state.queued_repos()) == 250 and state.window_done(window.query(100))
