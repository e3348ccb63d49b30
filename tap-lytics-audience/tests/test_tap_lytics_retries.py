"""Retries against the Lytics sandbox: transient statuses, 429 in its own budget, bounded
retries, the retry contract's waits (common/retries.py), network errors after first contact,
truncated JSON bodies."""

from __future__ import annotations

import pytest
from singer_sdk.exceptions import RetriableAPIError
from tap_lytics_audience.client import LyticsCursorPaginator
from tap_lytics_audience.streams import AudienceMembersStream
from tap_lytics_audience.tap import TapLyticsAudience
from tap_lytics_testkit import members, scan_requests

from sandbox import LyticsSandbox


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_errors_are_retried(lytics_sandbox, tap_runner, make_config, status):
    aid = lytics_sandbox.generate_members("r", 120)
    lytics_sandbox.fail_next(2, status=status, path_prefix=f"/api/segment/{aid}/scan")
    lytics_sandbox.fail_next(1, status=status, path_prefix="/api/segment")
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["r"], max_retries=3))
    assert len(run.records["audience_members"]) == 120
    assert run.records["audience_snapshots"][0]["member_count"] == 120
    statuses = [r.status for r in lytics_sandbox.requests_snapshot()]
    assert statuses.count(status) == 3
    assert lytics_sandbox.stats_snapshot()["faults"] == 3


def test_rate_limit_429_from_the_server_is_retried(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.generate_members("rl", 500)
    lytics_sandbox.rate_limit = 2
    lytics_sandbox.rate_limit_window = 0.2
    run = tap_runner(
        make_config(
            lytics_sandbox.url,
            audiences=["rl"],
            max_retries=8,
            retry_backoff_base=0.05,
            retry_backoff_max=0.3,
        )
    )
    assert len(run.records["audience_members"]) == 500
    assert lytics_sandbox.stats_snapshot()["rate_limited"] > 0
    assert run.records["audience_snapshots"][0]["member_count"] == 500


def test_retries_are_bounded_and_a_crash_emits_no_snapshot(lytics_sandbox, tap_runner, make_config):
    lytics_sandbox.add_audience("done_first", members=members(3))
    aid = lytics_sandbox.generate_members("crash", 500)
    config = make_config(
        lytics_sandbox.url,
        audiences=["done_first", "crash"],
        page_size=100,
        max_retries=2,
        prefetch_pages=2,
    )
    calls = {"n": 0}
    original = LyticsCursorPaginator.get_next

    def failing_after_two_pages(self, response):
        token = original(self, response)
        if response.url.split("?")[0].endswith(f"{aid}/scan"):
            calls["n"] += 1
            if calls["n"] == 2:  # every later request of this scan fails with 500
                lytics_sandbox.fail_next(1000, status=500, path_prefix=f"/api/segment/{aid}/scan")
        return token

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LyticsCursorPaginator, "get_next", failing_after_two_pages)
        run = tap_runner(config, expect_error=True)
    assert isinstance(run.error, RetriableAPIError)
    crash_reqs = scan_requests(lytics_sandbox, aid)
    assert len(crash_reqs) == 2 + 3  # two pages, then 1 + max_retries attempts
    crashed = [r for r in run.records["audience_members"] if r["audience_id"] == aid]
    assert len(crashed) == 200
    done_first = [r for r in run.records["audience_members"] if r["audience_slug"] == "done_first"]
    assert len(done_first) == 3  # scanned to the end, yet the failed run emits no snapshot
    assert run.records["audience_snapshots"] == []
    assert "sandbox-lytics-token" not in str(run.error)


def test_the_wait_generator_follows_the_retry_contract(make_config, monkeypatch):
    """Waits and budgets of common/retries.py, through the SDK's backoff hooks."""
    import requests as rq
    from tap_lytics_audience.common import retries

    monkeypatch.setattr(retries, "random", lambda: 0.5)  # jitter factor 0.5 + 0.5 * 0.5
    tap = TapLyticsAudience(
        config=make_config(
            "http://127.0.0.1:9",
            retry_backoff_base=0.5,
            retry_backoff_max=4,
            max_retries=3,
            max_rate_limit_retries=2,
        )
    )
    stream = tap.streams["audience_members"]
    assert isinstance(stream, AudienceMembersStream)
    gen = stream.backoff_wait_generator()
    gen.send(None)

    def answer(status, headers=None):
        resp = rq.Response()
        resp.status_code = status
        resp.headers.update(headers or {})
        return RetriableAPIError(str(status), resp)

    assert gen.send(answer(429)) == 0.375  # backoff(1) = 0.5 * 0.75
    assert gen.send(answer(429, {"Retry-After": "3"})) == 3.0  # the server's wait, no jitter
    assert gen.send(answer(503, {"Retry-After": "10"})) == 4.0  # capped at retry_backoff_max
    assert gen.send(answer(500)) == 3.0  # backoff(4) = min(0.5 * 8, 4) * 0.75
    assert gen.send(rq.exceptions.ConnectionError("reset")) == 3.0  # a third failure
    with pytest.raises(RetriableAPIError, match=r"502; gave up after 6 attempts: raise `max_re"):
        gen.send(answer(502))  # a fourth failure: max_retries (3) used up
    assert stream.backoff_jitter(1.5) == 1.5  # the policy jitters its backoff, not the SDK
    assert stream.backoff_max_tries() == 1 + 3 + 2

    gen = stream.backoff_wait_generator()
    gen.send(None)
    assert [gen.send(answer(429)) for _ in range(2)] == [0.375, 0.75]
    with pytest.raises(RetriableAPIError, match=r"raise `max_rate_limit_retries` \(now 2\)"):
        gen.send(answer(429))  # a third 429: max_rate_limit_retries (2) used up

    gen = stream.backoff_wait_generator()
    gen.send(None)
    assert [gen.send(rq.exceptions.Timeout()) for _ in range(3)] == [0.375, 0.75, 1.5]
    with pytest.raises(StopIteration):  # a network error: backoff raises it as it came
        gen.send(rq.exceptions.Timeout())


def test_rate_limited_answers_count_in_their_own_budget(
    lytics_sandbox, tap_runner, make_config, caplog, monkeypatch
):
    """429s do not use up `max_retries`; `max_rate_limit_retries` bounds them.

    Each retry is logged like every plugin's ('<what> answered 503; retry 2/5 in 3.1 s'),
    counted in its own budget, per request: the two audiences are scanned concurrently and
    each counts only its own retries.
    """
    from tap_lytics_audience.common import retries

    monkeypatch.setattr(retries, "random", lambda: 0.0)  # every backoff: 0.2 * 0.5 = 0.1 s
    aid = lytics_sandbox.generate_members("rl", 30)
    other = lytics_sandbox.generate_members("other", 20)
    scan = f"/api/segment/{aid}/scan"
    lytics_sandbox.fail_next(4, status=429, path_prefix=scan)
    lytics_sandbox.fail_next(1, status=503, path_prefix=scan)
    lytics_sandbox.fail_next(2, status=502, path_prefix=f"/api/segment/{other}/scan")
    cfg = make_config(
        lytics_sandbox.url,
        audiences=["rl", "other"],
        max_retries=2,
        scan_concurrency=2,
        retry_backoff_base=0.2,
        retry_backoff_max=0.2,
    )

    def retry_lines() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
        caplog.clear()
        return lines

    with caplog.at_level("WARNING"):
        run = tap_runner({**cfg, "max_rate_limit_retries": 4})
    assert {s["audience_slug"]: s["member_count"] for s in run.records["audience_snapshots"]} == {
        "rl": 30,
        "other": 20,
    }
    assert [r.status for r in scan_requests(lytics_sandbox, aid)] == [429] * 4 + [503, 200]
    lines = retry_lines()
    assert [line for line in lines if scan in line] == [
        *(f"Lytics answered 429 on {scan}; retry {n}/4 in 0.1 s" for n in range(1, 5)),
        f"Lytics answered 503 on {scan}; retry 1/2 in 0.1 s",  # its own budget: max_retries
    ]
    assert [line for line in lines if scan not in line] == [
        f"Lytics answered 502 on /api/segment/{other}/scan; retry {n}/2 in 0.1 s" for n in (1, 2)
    ]

    lytics_sandbox.clear_requests()
    lytics_sandbox.fail_next(1000, status=429, path_prefix=scan)
    with caplog.at_level("WARNING"):
        run = tap_runner(
            {**cfg, "audiences": ["rl"], "max_rate_limit_retries": 2}, expect_error=True
        )
    assert isinstance(run.error, RetriableAPIError)
    assert "gave up after 3 attempts: raise `max_rate_limit_retries` (now 2)" in str(run.error)
    assert [r.status for r in scan_requests(lytics_sandbox, aid)] == [429] * 3
    assert run.records["audience_snapshots"] == []
    assert retry_lines() == [f"Lytics answered 429 on {scan}; retry {n}/2 in 0.1 s" for n in (1, 2)]
    assert "sandbox-lytics-token" not in caplog.text


def test_network_errors_after_first_contact_are_still_retried(
    lytics_sandbox, tap_runner, make_config, monkeypatch
):
    """A refused connection once Lytics answered is transient (e.g. a restart): retried."""
    import requests
    from tap_lytics_audience.client import LyticsStream

    lytics_sandbox.add_audience("a", members=members(3))
    real_send = LyticsStream.send_on
    calls = {"n": 0}

    def flaky(self, session, prepared, context):  # first scan request: refused once
        calls["n"] += 1
        if calls["n"] == 1:
            raise requests.exceptions.ConnectionError(ConnectionRefusedError(111, "refused"))
        return real_send(self, session, prepared, context)

    monkeypatch.setattr(LyticsStream, "send_on", flaky)
    run = tap_runner(make_config(lytics_sandbox.url, audiences=["a"]))
    assert calls["n"] >= 2
    assert run.records["audience_snapshots"][0]["member_count"] == 3


class TruncatingLyticsSandbox(LyticsSandbox):
    """Lytics emulator whose next `truncate` answers under `prefix` lose half their body.

    A transport fault (proxy, load balancer, dropped connection): Lytics documents nothing
    about it, so the tap must treat it as transient.
    """

    truncate = 0
    prefix = "/api/segment"

    def decorate(self, req, resp):
        status, body, headers = super().decorate(req, resp)
        if self.truncate and status == 200 and req.path.startswith(self.prefix):
            self.truncate -= 1
            body = body[: len(body) // 2]
        return status, body, headers


@pytest.mark.parametrize("where", ["list", "scan"])
def test_truncated_json_body_is_retried(tap_runner, make_config, where):
    with TruncatingLyticsSandbox() as sandbox:
        aid = sandbox.generate_members("t", 150)
        sandbox.prefix = f"/api/segment/{aid}/scan" if where == "scan" else "/api/segment"
        sandbox.truncate = 2
        run = tap_runner(make_config(sandbox.url, audiences=["t"], max_retries=3))
        assert sandbox.truncate == 0, "both truncated answers were served"
    assert len(run.records["audience_members"]) == 150
    assert run.records["audience_snapshots"][0]["member_count"] == 150


def test_truncated_json_body_fails_naming_the_path_after_bounded_retries(tap_runner, make_config):
    with TruncatingLyticsSandbox() as sandbox:
        aid = sandbox.generate_members("t", 150)
        sandbox.prefix = f"/api/segment/{aid}/scan"
        sandbox.truncate = 1000
        run = tap_runner(
            make_config(sandbox.url, audiences=["t"], max_retries=2), expect_error=True
        )
        scans = [r for r in sandbox.requests_snapshot() if r.path.endswith("/scan")]
    assert isinstance(run.error, RetriableAPIError)
    message = str(run.error)
    assert message.startswith(
        f"Lytics answered HTTP 200 on /api/segment/{aid}/scan with a truncated"
    )
    assert "gave up after 3 attempts: raise `max_retries` (now 2) to retry longer" in message
    assert len(scans) == 3  # 1 + max_retries attempts, then the run fails
    assert run.records["audience_snapshots"] == []  # a failed scan never completes
    assert "sandbox-lytics-token" not in message
