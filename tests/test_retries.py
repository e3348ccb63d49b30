"""The one retry schedule (common/retries.py) and its tenacity loop (common/retrying.py): two
budgets, doubling backoff with jitter of up to half, a server's wait capped and not jittered,
and the loop that stops on either budget, never retries what the plugin did not call
retryable, and stops waiting when the plugin's sleep says the run is stopping."""

from __future__ import annotations

import time

import pytest
from target_lytics_users.common import retries, retrying
from target_lytics_users.common.retries import RetryPolicy, server_wait
from target_lytics_users.common.retrying import RetriesExhausted, Retryable

POLICY = RetryPolicy(max_retries=3, max_rate_limit_retries=2, backoff_base=2.0, backoff_max=10.0)


@pytest.fixture
def rand(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """`random()` answers these values in turn (the last one repeats)."""
    values = [0.0]
    monkeypatch.setattr(retries, "random", lambda: values.pop(0) if len(values) > 1 else values[0])
    return values


def test_backoff_doubles_is_capped_and_jitter_shortens_by_up_to_half(rand: list[float]) -> None:
    rand[:] = [0.0]
    assert [POLICY.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    rand[:] = [0.999999]
    for n, full in zip(range(1, 6), (2.0, 4.0, 8.0, 10.0, 10.0), strict=True):
        assert full * 0.99 < POLICY.backoff(n) < full
    rand[:] = [0.5]
    assert POLICY.backoff(1) == 1.5


def test_a_server_wait_wins_capped_at_backoff_max_without_jitter(rand: list[float]) -> None:
    rand[:] = [0.0]
    assert POLICY.wait(1, 7.0) == 7.0
    assert POLICY.wait(1, 500.0) == 10.0
    assert POLICY.wait(3, 0.0) == 0.0  # "now" is a usable answer too
    assert POLICY.wait(3, None) == POLICY.backoff(3) == 4.0


def test_each_kind_has_its_own_budget() -> None:
    assert not POLICY.exhausted(3, 2)
    assert POLICY.exhausted(4, 0)
    assert POLICY.exhausted(0, 3)


def test_from_config_reads_the_four_settings_absent_ones_keep_the_plugins_defaults() -> None:
    defaults = RetryPolicy(max_retries=8)
    assert RetryPolicy.from_config({}, defaults) == defaults
    assert RetryPolicy.from_config({"max_retries": None}) == RetryPolicy()
    config = {
        "max_retries": 2,
        "max_rate_limit_retries": 4,
        "retry_backoff_base": 0.5,
        "retry_backoff_max": 9,
    }
    policy = RetryPolicy.from_config(config, defaults)
    assert policy == RetryPolicy(2, 4, 0.5, 9.0)
    assert isinstance(policy.backoff_max, float)


def test_server_wait_reads_retry_after_first_then_the_rate_limit_reset() -> None:
    reset = str(int(time.time()) + 20)
    assert server_wait({"Retry-After": "7", "X-RateLimit-Reset": reset}) == 7.0
    ahead = server_wait({"Retry-After": "soon", "X-RateLimit-Reset": reset})
    assert ahead is not None
    assert 18 <= ahead <= 20
    assert server_wait({"Retry-After": "inf"}) is None
    assert server_wait({}) is None
    # A 5xx: the rate-limit window's reset is no wait (Braze sends it on every answer).
    assert server_wait({"X-RateLimit-Reset": reset}, rate_limited=False) is None
    assert server_wait({"Retry-After": "7", "X-RateLimit-Reset": reset}, rate_limited=False) == 7


def test_the_descriptions_are_the_contracts_words() -> None:
    assert retries.DESCRIPTIONS["max_retries"] == (
        "Retries of one request after a 5xx answer, a timeout or a connection error; then the "
        "run stops with the error (429 answers count in `max_rate_limit_retries`)."
    )
    assert set(retries.DESCRIPTIONS) == {
        "max_retries",
        "max_rate_limit_retries",
        "retry_backoff_base",
        "retry_backoff_max",
    }


class Script:
    """An attempt function answering from a script: an exception to raise, or a value."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _loop(
    script: Script, policy: RetryPolicy = POLICY
) -> tuple[object, list[float], list[tuple[str, int, int, float]]]:
    slept: list[float] = []
    logged: list[tuple[str, int, int, float]] = []

    def log(outcome: Retryable, count: int, budget: int, wait: float) -> None:
        logged.append((outcome.reason, count, budget, wait))

    result = retrying.retrying(policy, sleep=slept.append, log=log)(script)
    return result, slept, logged


def test_the_loop_waits_the_schedule_and_counts_each_kind_against_its_budget(
    rand: list[float],
) -> None:
    rand[:] = [0.0]
    script = Script(
        Retryable("answered 503"),
        Retryable("answered 429", rate_limited=True, server_wait=7.0),
        Retryable("answered 429", rate_limited=True),
        Retryable("ConnectTimeout"),
        "done",
    )
    result, slept, logged = _loop(script)
    assert result == "done"
    assert script.calls == 5
    # Retry n (both kinds counted) waits the server's answer, else backoff(n) = min(2 * 2**(n-1),
    # 10) * 0.5 here: 1, then 7 (no jitter), 4, 5 (capped at 10, halved by the jitter).
    assert slept == [1.0, 7.0, 4.0, 5.0]
    assert logged == [
        ("answered 503", 1, 3, 1.0),
        ("answered 429", 1, 2, 7.0),
        ("answered 429", 2, 2, 4.0),
        ("ConnectTimeout", 2, 3, 5.0),
    ]
    assert retrying.describe(Retryable("Braze answered 503"), 2, 5, 3.14) == (
        "Braze answered 503; retry 2/5 in 3.1 s"
    )


@pytest.mark.parametrize(
    ("outcome", "requests", "setting"),
    [
        (Retryable("answered 503"), 4, "max_retries"),
        (
            Retryable("answered 429", rate_limited=True, server_wait=0.0),
            3,
            "max_rate_limit_retries",
        ),
    ],
)
def test_a_used_up_budget_raises_naming_the_setting(
    outcome: Retryable, requests: int, setting: str, rand: list[float]
) -> None:
    script = Script(outcome)
    with pytest.raises(RetriesExhausted) as exc:
        _loop(script)
    assert script.calls == requests  # the budget's retries, plus the first request
    assert exc.value.setting == setting
    assert exc.value.last is outcome
    assert exc.value.count.attempts == requests


def test_what_the_plugin_did_not_call_retryable_is_raised_at_once() -> None:
    script = Script(Retryable("answered 503"), KeyError("refused"))
    with pytest.raises(KeyError):
        _loop(script)
    assert script.calls == 2


def test_the_plugins_sleep_stops_the_loop_by_raising(rand: list[float]) -> None:
    class Stopping(Exception):
        pass

    def sleep(seconds: float) -> None:
        raise Stopping

    script = Script(Retryable("answered 503"), "done")
    with pytest.raises(Stopping):
        retrying.retrying(POLICY, sleep=sleep, log=lambda *a: None)(script)
    assert script.calls == 1


def test_one_loop_counts_each_call_afresh(rand: list[float]) -> None:
    loop = retrying.retrying(POLICY, sleep=lambda s: None, log=lambda *a: None)
    for _ in range(3):  # 3 retried 503s each: within max_retries every time
        script = Script(*[Retryable("answered 503")] * 3, "done")
        assert loop(script) == "done"


def test_no_retry_waits_past_the_deadline(rand: list[float]) -> None:
    """With a deadline, the loop stops before a wait that would end past it (budgets left)."""
    slept: list[float] = []
    script = Script(
        Retryable("answered 503"), Retryable("answered 429", rate_limited=True, server_wait=60.0)
    )
    loop = retrying.retrying(
        POLICY, sleep=slept.append, log=lambda *a: None, deadline=time.monotonic() + 5
    )
    with pytest.raises(retrying.DeadlinePassed) as exc:
        loop(script)
    assert slept == [1.0]  # backoff(1) fits; the server's 60 s (capped: 10 s) would not
    assert script.calls == 2
    assert exc.value.wait == 10.0
    assert exc.value.count.attempts == 2
    assert exc.value.last.reason == "answered 429"
