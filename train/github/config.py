"""What a GitHub scrape collects and how hard it pulls: one dataclass, defaults defined once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from codecomplete.train.filters import FilterConfig

DEFAULT_API_URL = "https://api.github.com"


@dataclass
class ScrapeConfig:
    out: Path
    api_url: str = DEFAULT_API_URL
    min_stars: int = 100
    since: str = "2008-01"  # creation months searched, YYYY-MM (or YYYY-MM-DD), inclusive
    until: str = ""  # "" means the current month
    python_share: float = 0.5  # of the repository's bytes, as GitHub's languages API counts them
    licenses: tuple[str, ...] = ()  # SPDX ids to allow (case-insensitive); empty allows any
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_repos: int | None = None  # repositories looked at, over all runs into `out`
    concurrency: int = 4  # repositories fetched at once; GitHub allows 100 concurrent requests
    batch_files: int = 2000  # rows per shard: a kill loses at most one batch of work
    batch_seconds: float = 600.0  # ...or at most this much time of it, when files come slowly
    tarball_max_mb: float = 500.0  # above this repository size, fetch files one blob at a time
