"""Discovery: creation-date windows, splitting past the search cap, complete pagination."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from fake_github import FakeClock, FakeGitHub, FakeRepo

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import GitHubClient
from codecomplete.train.github.discover import SEARCH_CAP, Window, discover, month_windows
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


def run_discover(gh: FakeGitHub, clock: FakeClock, out: Path, window: Window) -> tuple[int, ScrapeState]:
    state = ScrapeState(out)  # also the ETag cache, as in a scrape
    client = GitHubClient(gh.url, Token(TOKEN, "$GITHUB_TOKEN"), cache=state, clock=clock.time, sleep=clock.sleep)
    return discover(client, state, window, min_stars=100), state


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
