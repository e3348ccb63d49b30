# generated from common/retrying.py by scripts/sync_common.py: edit the original
"""tenacity driven by a RetryPolicy (retries.py): the retry loop of the plugins' HTTP clients.

A plugin's client makes one attempt in a function and says what happened:

- it returns a value: done (tenacity returns it);
- it raises `Retryable` (its own classification: a 429, a 5xx, a timeout, a connection error
  worth retrying), with the server's wait if the answer carried one: retried on the policy's
  schedule, 429s against `max_rate_limit_retries`, the rest against `max_retries`;
- it raises anything else: not retried (fail-fast errors such as a refused key).

When a budget is used up, `RetriesExhausted` is raised, naming the setting and holding the
counts and the last `Retryable`, so the plugin raises its own error from it. A request that
must end by a `deadline` (`time.monotonic()`, e.g. an export's wait timeout) stops retrying
when the next wait would end past it: `DeadlinePassed` is raised, holding the same. The plugin
passes its own interruptible `sleep` (which raises to stop waiting when the run stops) and its
own warning log. Build one `Retrying` per request: it counts that request's retries.

Every plugin depending on tenacity carries a copy of this module (scripts/sync_common.py).
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass

import tenacity

from .retries import RetryPolicy, retry_message


class Retryable(Exception):
    """Raised by one attempt whose outcome is worth retrying."""

    def __init__(
        self, reason: str, *, rate_limited: bool = False, server_wait: float | None = None
    ) -> None:
        """`reason` is for logs and errors (never a secret); `rate_limited` for a 429."""
        super().__init__(reason)
        self.reason = reason
        self.rate_limited = rate_limited
        self.server_wait = server_wait


@dataclass
class RetryCount:
    """One request's retried outcomes so far, by budget."""

    failures: int = 0
    rate_limited: int = 0

    @property
    def attempts(self) -> int:
        """Requests made (each retried outcome was one)."""
        return self.failures + self.rate_limited


class RetriesExhausted(Exception):
    """A budget is used up: `setting` names it, `last` is the final retryable outcome."""

    def __init__(self, last: Retryable, count: RetryCount, policy: RetryPolicy) -> None:
        """Name the budget that ran out (the kind of the last outcome)."""
        self.last = last
        self.count = count
        if last.rate_limited:
            self.setting, self.budget = "max_rate_limit_retries", policy.max_rate_limit_retries
        else:
            self.setting, self.budget = "max_retries", policy.max_retries
        super().__init__(f"{last.reason}; `{self.setting}` ({self.budget}) used up")


class DeadlinePassed(Exception):
    """The next retry's wait would end past the request's deadline: `last` is the final outcome."""

    def __init__(self, last: Retryable, count: RetryCount, wait: float) -> None:
        """Keep the last outcome, the counts and the wait that did not fit."""
        self.last = last
        self.count = count
        self.wait = wait
        super().__init__(f"{last.reason}; the retry in {wait:.1f} s would pass the deadline")


class RetryLog(t.Protocol):
    """The plugin's warning before a retry: (outcome, its count, its budget, wait in seconds)."""

    def __call__(self, outcome: Retryable, count: int, budget: int, wait: float) -> None:
        """Log the coming retry."""


def describe(outcome: Retryable, count: int, budget: int, wait: float) -> str:
    """'Braze answered 503: ...; retry 2/5 in 3.1 s' (retries.retry_message, every plugin's)."""
    return retry_message(outcome.reason, count, budget, wait)


def _outcome(state: tenacity.RetryCallState) -> Retryable:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, Retryable)
    return exc


def retrying(
    policy: RetryPolicy,
    *,
    sleep: t.Callable[[float], None],
    log: RetryLog,
    deadline: float | None = None,
) -> tenacity.Retrying:
    """Build a `tenacity.Retrying` for one request on `policy`'s schedule (see the module).

    With a `deadline` (`time.monotonic()` seconds), no retry waits past it.
    """
    count = RetryCount()

    def before(state: tenacity.RetryCallState) -> None:
        if state.attempt_number == 1:  # a new call: count afresh
            count.failures = count.rate_limited = 0

    def after(state: tenacity.RetryCallState) -> None:  # once per retried outcome
        if _outcome(state).rate_limited:
            count.rate_limited += 1
        else:
            count.failures += 1

    def wait(state: tenacity.RetryCallState) -> float:
        # Retry n is the n-th retry of the request, both kinds counted: attempt n just failed.
        return policy.wait(state.attempt_number, _outcome(state).server_wait)

    def late(state: tenacity.RetryCallState) -> bool:  # the wait is known before the stop
        return deadline is not None and time.monotonic() + state.upcoming_sleep > deadline

    def stop(state: tenacity.RetryCallState) -> bool:
        return policy.exhausted(count.failures, count.rate_limited) or late(state)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = _outcome(state)
        if outcome.rate_limited:
            log(outcome, count.rate_limited, policy.max_rate_limit_retries, state.upcoming_sleep)
        else:
            log(outcome, count.failures, policy.max_retries, state.upcoming_sleep)

    def give_up(state: tenacity.RetryCallState) -> t.NoReturn:
        cause = state.outcome.exception()  # type: ignore[union-attr]
        if policy.exhausted(count.failures, count.rate_limited):
            raise RetriesExhausted(_outcome(state), count, policy) from cause
        raise DeadlinePassed(_outcome(state), count, state.upcoming_sleep) from cause

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Retryable),
        before=before,
        after=after,
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
