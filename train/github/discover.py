"""Find repositories with the search API, one creation-date window at a time.

A search query pages through at most 1,000 results, so a window reporting more is split in
half (down to a single second) until every part fits; each part is paged to the end.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.github.client import GitHubClient, GitHubStatus
from codecomplete.train.github.repos import RepoRef
from codecomplete.train.github.state import ScrapeState

log = logging.getLogger(__name__)

SEARCH_CAP = 1000  # results GitHub lets one query page through
PER_PAGE = 100  # the most the search API gives per page
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


def discover(
    client: GitHubClient,
    state: ScrapeState,
    window: Window,
    min_stars: int,
    on_page: Callable[[], None] | None = None,
) -> int:
    """Queue every repository the search lists for `window`; returns how many were new."""
    key = window.query(min_stars)
    if state.window_done(key):
        return 0
    items, total, next_url = _page(client, "/search/repositories", {"q": key, "per_page": PER_PAGE})
    if total > SEARCH_CAP and (halves := window.split()) is not None:
        added = sum(discover(client, state, half, min_stars, on_page) for half in halves)
        state.finish_window(key)  # a rerun then skips even the probe of this window
        return added
    if total > SEARCH_CAP:
        log.warning(
            "%d repositories were created at %s; the search reaches only the first %d",
            total,
            _iso(window.start),
            SEARCH_CAP,
        )
    while next_url and len(items) < SEARCH_CAP:
        if on_page is not None:
            on_page()
        more, _, next_url = _page(client, next_url)
        items += more
    return state.finish_window(key, [RepoRef.from_search_item(item) for item in items[:SEARCH_CAP]])


def _page(
    client: GitHubClient, url: str, params: dict[str, object] | None = None
) -> tuple[list[dict], int, str | None]:
    """(items, total_count, URL of the next page or None)."""
    response = client.get(url, params)
    if response.status != 200:
        raise GitHubStatus(response.status, response.message(), "/search/repositories")
    body = response.json()
    if body.get("incomplete_results"):
        log.debug("search timed out on GitHub's side; results may be incomplete: %s", url)
    match = _NEXT_LINK.search(response.headers.get("link", ""))
    return list(body["items"]), int(body["total_count"]), match.group(1) if match else None


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
