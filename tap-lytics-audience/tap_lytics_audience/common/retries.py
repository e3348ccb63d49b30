# generated from common/retries.py by scripts/sync_common.py: edit the original
"""One retry schedule for every plugin: two budgets, doubling backoff with jitter, server waits.

The four plugins share the settings `max_retries`, `max_rate_limit_retries`,
`retry_backoff_base` and `retry_backoff_max` (issue 15), and mean the same by them:

- retry n is the n-th retry of one request, counting both kinds, 1-based;
- backoff(n) = min(base * 2**(n-1), max) * (0.5 + 0.5 * random()): doubling, capped, each wait
  shortened at random by up to half (jitter) so concurrent senders spread out;
- a retried answer (429 or 5xx) that carries a usable server wait (`Retry-After` first, else,
  on a 429, Braze's `X-RateLimit-Reset`; read by retry_headers.py) waits min(server wait, max)
  instead, without jitter: the server said when;
- 429 answers count against `max_rate_limit_retries`; 5xx answers, timeouts and connection
  errors against `max_retries`; either budget exhausted ends the retrying.

Which answers are retryable at all stays each plugin's own decision; this module only says how
long to wait and when to stop. Every plugin installs on its own, so each carries a copy of this
module (scripts/sync_common.py).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from random import random  # module-level name: tests patch `<module>.random`

from .retry_headers import rate_limit_reset_seconds, retry_after_seconds

SETTINGS = {
    "max_retries": "max_retries",
    "max_rate_limit_retries": "max_rate_limit_retries",
    "backoff_base": "retry_backoff_base",
    "backoff_max": "retry_backoff_max",
}
"""RetryPolicy field -> the setting it is read from."""

DESCRIPTIONS = {
    "max_retries": (
        "Retries of one request after a 5xx answer, a timeout or a connection error; then the "
        "run stops with the error (429 answers count in `max_rate_limit_retries`)."
    ),
    "max_rate_limit_retries": (
        "Retries of one request answered 429 (rate limited), each after the wait the server "
        "asks for (`Retry-After` or `X-RateLimit-Reset`, at most `retry_backoff_max`), else "
        "after the backoff; then the run stops with the error."
    ),
    "retry_backoff_base": (
        "Seconds before the first retry; each further retry waits twice as long, up to "
        "`retry_backoff_max`, each wait shortened at random by up to half (jitter)."
    ),
    "retry_backoff_max": (
        "Longest wait before one retry, in seconds: caps the doubling backoff and any longer "
        "wait the server asks for (`Retry-After`, `X-RateLimit-Reset`)."
    ),
}
"""The settings' descriptions, the same words in every plugin's `--about`."""


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings of one plugin run, and the schedule they make."""

    max_retries: int = 5
    max_rate_limit_retries: int = 30
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_config(
        cls, config: t.Mapping[str, t.Any], defaults: RetryPolicy | None = None
    ) -> RetryPolicy:
        """Read the four settings from `config`; a setting absent (or None) keeps its default.

        `defaults` holds the plugin's own defaults where they differ from this class's.
        """
        base = defaults or cls()
        values: dict[str, t.Any] = {}
        for field, setting in SETTINGS.items():
            value = config.get(setting)
            kind = int if field.startswith("max_") else float
            values[field] = kind(getattr(base, field) if value is None else value)
        return cls(**values)

    def backoff(self, retry: int) -> float:
        """Return the wait before retry `retry` (1-based) with no server wait: doubling, jitter."""
        full = min(self.backoff_base * 2 ** max(0, retry - 1), self.backoff_max)
        return full * (0.5 + 0.5 * random())

    def wait(self, retry: int, server_wait: float | None) -> float:
        """Return the wait before retry `retry`: the server's (at most `backoff_max`), else backoff."""
        if server_wait is not None:
            return min(server_wait, self.backoff_max)
        return self.backoff(retry)

    def exhausted(self, failures: int, rate_limited: int) -> bool:
        """Whether a request failed `failures` times and rate limited `rate_limited` is done.

        Either budget used up means no further retry.
        """
        return failures > self.max_retries or rate_limited > self.max_rate_limit_retries


def retry_message(reason: str, count: int, budget: int, wait: float) -> str:
    """Return the warning before a retry, every plugin's: 'Braze answered 503; retry 2/5 in 3.1 s'.

    `reason` says what failed (never a secret, never a URL carrying one); `count` is this
    retry's number in its budget (429s in `max_rate_limit_retries`, the rest in
    `max_retries`), `budget` that setting's value, `wait` the seconds before the retry.
    """
    return f"{reason}; retry {count}/{budget} in {wait:.1f} s"


def server_wait(headers: t.Mapping[str, str], *, rate_limited: bool = True) -> float | None:
    """Seconds the server asks to wait: `Retry-After`, else `X-RateLimit-Reset`, else None.

    None when neither is usable (absent, unparsable, not finite). `X-RateLimit-Reset` (when
    the rate-limit window resets) is a wait only for a rate-limited answer: Braze sends it on
    every answer, and on a 5xx it says nothing about when the server recovers, so pass
    `rate_limited=False` for those (their backoff then applies unless `Retry-After` is given).
    `headers` is looked up by the headers' usual spelling (requests' are case-insensitive).
    """
    wait = retry_after_seconds(headers.get("Retry-After"))
    if wait is None and rate_limited:
        wait = rate_limit_reset_seconds(headers.get("X-RateLimit-Reset"))
    return wait
