"""Find repositories with the search API, one creation-date window at a time.

A search query pages through a limited number of results: 1,000 on GitHub, fewer on a server
configured so. A window whose pages end before its `total_count` is split in half (down to a
single second) until every part is paged to the end; once a server has shown how far one query
reaches, a window reporting more is split before it is paged. A page answered with
`incomplete_results: true` (GitHub's search timed out) is asked again with backoff; one that
stays incomplete is kept with a warning, and its window is not marked done, so the next run
searches it again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import GitHubClient, GitHubStatus
from codecomplete.train.github.repos import RepoRef
from codecomplete.train.github.state import ScrapeState

log = logging.getLogger(__name__)

SEARCH_CAP = 1000  # results GitHub lets one query page through; other servers may reach fewer
PER_PAGE = 100  # the most the search API gives per page
INCOMPLETE_TRIES = 4  # asks of a page GitHub's search keeps cutting short before accepting it
INCOMPLETE_BACKOFF_S = 5.0  # then 10 and 20 s: a timed-out search means load on GitHub's side
ONE_SECOND = timedelta(seconds=1)
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class Window:
    """Repositories created from `start` to `end`, both included, in whole UTC seconds."""

    start: datetime
    end: datetime

    def query(self, min_stars: int) -> str:
        created = f"{_iso(self.start)}..{_iso(self.end)}"
        return f"language:Python stars:>={min_stars} fork:false created:{created}"

    def split(self) -> tuple[Window, Window] | None:
        if self.end - self.start < ONE_SECOND:
            return None
        middle = self.start + timedelta(seconds=(self.end - self.start).total_seconds() // 2)
        return Window(self.start, middle), Window(middle + ONE_SECOND, self.end)

    def label(self) -> str:
        return self.start.strftime("%Y-%m")


def month_windows(since: str, until: str, today: date | None = None) -> list[Window]:
    """One window per calendar month from `since` to `until` (YYYY-MM or YYYY-MM-DD)."""
    start = _parse_day(since, "--since")
    if until:
        last = _parse_day(until, "--until")
        # A bare month means its last day.
        end_day = _month_end(last) if len(until.strip()) == 7 else last
    else:
        end_day = _month_end(today or datetime.now(UTC).date())
    if end_day < start:
        raise CodecompleteError(f"--until {until} is before --since {since}; swap them")
    windows = []
    month = start.replace(day=1)
    while month <= end_day:
        first = max(month, start)
        last_day = min(_month_end(month), end_day)
        windows.append(Window(_at(first), _at(last_day + timedelta(days=1)) - ONE_SECOND))
        month = _month_end(month) + timedelta(days=1)
    return windows


@dataclass
class SearchStats:
    """What discovery learnt and met over a scrape: one instance shared by all its windows."""

    reach: int = SEARCH_CAP  # the most results one query pages through on this server
    windows: int = 0  # windows paged to their end
    incomplete: int = 0  # ...of which GitHub's search stayed incomplete


@dataclass
class _Page:
    items: list[dict]
    total: int  # total_count
    next_url: str | None
    complete: bool  # not incomplete_results


def discover(
    client: GitHubClient,
    state: ScrapeState,
    window: Window,
    min_stars: int,
    stats: SearchStats | None = None,
) -> int:
    """Queue every repository the search lists for `window`; returns how many were new."""
    return _discover(client, state, window, min_stars, stats or SearchStats())[0]


def _discover(
    client: GitHubClient, state: ScrapeState, window: Window, min_stars: int, stats: SearchStats
) -> tuple[int, bool]:
    """(new repositories, whether every part of the window was searched completely)."""
    key = window.query(min_stars)
    if state.window_done(key):
        return 0, True
    page = _page(client, "/search/repositories", {"q": key, "per_page": PER_PAGE})
    total, halves = page.total, window.split()
    if total > stats.reach and halves is not None:
        return _split(client, state, key, halves, min_stars, stats)
    items, complete = list(page.items), page.complete
    while page.next_url:
        page = _page(client, page.next_url)
        items += page.items
        complete = complete and page.complete
    # An incomplete answer may fall short of its count for want of time, not reach: splitting
    # on it could halve a slow server's windows down to single seconds.
    if complete and len(items) < total:
        # The server's reach. Below one page, learning it saves no request (the probe is the
        # page), and a repository deleted between two pages must not make every window split.
        if len(items) >= PER_PAGE:
            stats.reach = min(stats.reach, len(items))
        if halves is not None:
            return _split(client, state, key, halves, min_stars, stats)
        log.warning(
            "%d repositories were created at %s; the search reaches only the first %d",
            total,
            _iso(window.start),
            len(items),
        )
    stats.windows += 1
    if not complete:
        stats.incomplete += 1
        missing = total - len(items)
        log.warning(
            "the search for repositories created %s..%s stayed incomplete after %d tries "
            "(GitHub's search timed out): kept %d of the %d it counted, so %s may be missing; "
            "the next run searches this window again",
            _iso(window.start),
            _iso(window.end),
            INCOMPLETE_TRIES,
            len(items),
            total,
            f"{missing} or more" if missing > 0 else "others",
        )
    refs = [RepoRef.from_search_item(item) for item in items]
    return state.finish_window(key, refs, done=complete), complete


def _split(
    client: GitHubClient,
    state: ScrapeState,
    key: str,
    halves: tuple[Window, Window],
    min_stars: int,
    stats: SearchStats,
) -> tuple[int, bool]:
    added, complete = 0, True
    for half in halves:
        n, whole = _discover(client, state, half, min_stars, stats)
        added, complete = added + n, complete and whole
    if complete:
        state.finish_window(key)  # a rerun then skips even the probe of this window
    return added, complete


def _page(client: GitHubClient, url: str, params: dict[str, object] | None = None) -> _Page:
    """One page of results, asked again (with backoff) while GitHub answers it incomplete."""
    for attempt in range(1, INCOMPLETE_TRIES + 1):
        response = client.get(url, params)
        if response.status != 200:
            raise GitHubStatus(response.status, response.message(), "/search/repositories")
        body = response.json()
        if not body.get("incomplete_results") or attempt == INCOMPLETE_TRIES:
            break
        delay = INCOMPLETE_BACKOFF_S * 2 ** (attempt - 1)
        log.debug("search timed out on GitHub's side; asking again in %.0f s", delay)
        client.limiter.sleep_for(delay, "a search GitHub answered incomplete")
    match = _NEXT_LINK.search(response.headers.get("link", ""))
    return _Page(
        list(body["items"]),
        int(body["total_count"]),
        match.group(1) if match else None,
        not body.get("incomplete_results"),
    )


def _parse_day(text: str, flag: str) -> date:
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}", value):
            return datetime.strptime(value, "%Y-%m").date()
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise CodecompleteError(
            f"{flag} {text!r} is not a date; write YYYY-MM or YYYY-MM-DD"
        ) from None


def _month_end(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
