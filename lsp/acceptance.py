"""A local record of suggestions shown and accepted, and the acceptance rate computed from it.

One JSON object per line, appended to a file on this machine and never sent anywhere. It holds
counts, ranks, sizes and timings, not the code. `acceptance_rate` is what the eval command reads.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger("codecomplete")


def default_log_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "codecomplete" / "acceptance.jsonl"


class AcceptanceLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: logging is off
        self._failed = False

    def shown(self, id: str, kind: str, items: int, latency_ms: float, model: str, language: str) -> None:
        self._write({"event": "shown", "id": id, "kind": kind, "items": items,
                     "latency_ms": round(latency_ms, 2), "model": model, "language": language})

    def accepted(self, id: str, kind: str, rank: int, chars: int) -> None:
        self._write({"event": "accepted", "id": id, "kind": kind, "rank": rank, "chars": chars})

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": round(time.time(), 3), **record}) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:  # one write per line: appends stay whole
                f.write(line)
            self._failed = False
        except OSError as e:
            if not self._failed:  # once per failure streak, not per keystroke
                log.warning("cannot write the acceptance log %s (%s); set codecomplete.acceptanceLogPath "
                            "or codecomplete.acceptanceLog = false", self.path, e)
            self._failed = True


def acceptance_rate(path: str | Path) -> dict[str, Any]:
    """Shown and accepted suggestion lists per kind, and the share of shown lists that were accepted.

    A list counts as shown when it had at least one item, and as accepted at most once.
    Lines that are not valid records (a torn write, an older format) are skipped.
    """
    shown: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    seen: set[str] = set()
    chars = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
                event, kind, id = r["event"], str(r["kind"]), str(r["id"])
            except (ValueError, KeyError, TypeError):
                continue
            if event == "shown" and r.get("items", 0) > 0:
                shown[kind] += 1
            elif event == "accepted" and id not in seen:
                seen.add(id)
                accepted[kind] += 1
                chars += int(r.get("chars", 0))
    kinds = sorted(set(shown) | set(accepted))
    by_kind = {k: {"shown": shown[k], "accepted": accepted[k],
                   "rate": accepted[k] / shown[k] if shown[k] else 0.0} for k in kinds}
    total_shown, total_accepted = sum(shown.values()), sum(accepted.values())
    return {"shown": total_shown, "accepted": total_accepted, "accepted_chars": chars,
            "rate": total_accepted / total_shown if total_shown else 0.0, "by_kind": by_kind}
