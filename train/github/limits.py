"""GitHub's rate limits as the response headers report them: who may send a request, and when.

Every request takes a slot from its resource's budget before it is sent and gives it back when
the answer arrives, so concurrent workers together never spend more than the headers allow.
Waits go through the injected clock and sleep, so tests run them instantly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# X-RateLimit-Reset is whole seconds on GitHub's clock; a little slack covers rounding and skew.
RESET_MARGIN_S = 1.0

WaitCallback = Callable[[float, str], None]  # (epoch seconds waited until, why)


@dataclass
class _Budget:
    remaining: int | None = None  # requests left as last reported; None: not known yet
    reset: float = 0.0  # epoch seconds when `remaining` refills
    in_flight: int = 0  # sent, not yet answered: already spent as far as we can tell


class RateLimiter:
    def __init__(
        self,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        on_wait: WaitCallback | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._budgets: dict[str, _Budget] = {}
        self._paused_until = 0.0  # Retry-After and secondary limits hold the whole account
        self._pause_reason = ""
        self._cond = threading.Condition()
        self.waited_s = 0.0
        self._waited_until = 0.0

    def acquire(self, resource: str) -> None:
        """Block until one more request against `resource` fits the budget, then reserve it."""
        while True:
            with self._cond:
                now = self._clock()
                until, reason = self._blocked_until(resource, now)
                if until is None:
                    self._budget(resource).in_flight += 1
                    return
                if until == 0.0:  # only requests in flight hold the last slot: await their answers
                    self._cond.wait(timeout=1.0)
                    continue
            self._wait(until, reason)

    def release(self, resource: str, headers: Mapping[str, str] | None) -> None:
        """Give back the slot of an answered (or failed) request; learn the budget it reports."""
        with self._cond:
            self._budget(resource).in_flight -= 1
            if headers is not None:
                self._learn(resource, headers)
            self._cond.notify_all()

    def set_budget(self, resource: str, remaining: int, reset: float) -> None:
        with self._cond:
            budget = self._budget(resource)
            budget.remaining, budget.reset = remaining, reset

    def pause(self, until: float, reason: str) -> None:
        """Hold every request until `until` (epoch seconds): GitHub asked us to back off."""
        with self._cond:
            if until > self._paused_until:
                self._paused_until, self._pause_reason = until, reason

    def sleep_for(self, seconds: float, reason: str) -> None:
        """This thread alone waits (a retry backoff); other requests go on."""
        self._wait(self._clock() + seconds, reason)

    def _budget(self, resource: str) -> _Budget:
        return self._budgets.setdefault(resource, _Budget())

    def _blocked_until(self, resource: str, now: float) -> tuple[float | None, str]:
        """(None: go; 0.0: wait for in-flight answers; else epoch seconds to sleep until, why)."""
        if now < self._paused_until:
            return self._paused_until, self._pause_reason
        budget = self._budget(resource)
        if budget.remaining is None or budget.remaining - budget.in_flight > 0:
            return None, ""
        if budget.remaining > 0:
            return 0.0, ""
        if now < budget.reset + RESET_MARGIN_S:
            return budget.reset + RESET_MARGIN_S, f"{resource} rate limit reset"
        budget.remaining = None  # the window rolled over; the next answer reports the new budget
        return None, ""

    def _learn(self, resource: str, headers: Mapping[str, str]) -> None:
        try:
            remaining = int(headers["x-ratelimit-remaining"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return  # GitHub Enterprise without rate limiting sends none
        budget = self._budget(headers.get("x-ratelimit-resource") or resource)
        if budget.remaining is None or reset > budget.reset:
            budget.remaining, budget.reset = remaining, reset
        else:
            # Answers arrive out of order under concurrency; the lowest count is the latest.
            budget.remaining = min(budget.remaining, remaining)

    def _wait(self, until: float, reason: str) -> None:
        seconds = max(0.0, until - self._clock())
        if seconds <= 0:
            return
        if self._on_wait is not None:
            self._on_wait(until, reason)
        with self._cond:
            # Time during which requests were held, however many threads waited through it.
            self.waited_s += max(0.0, until - max(self._clock(), self._waited_until))
            self._waited_until = max(self._waited_until, until)
        self._sleep(seconds)
