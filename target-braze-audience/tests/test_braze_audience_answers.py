"""Braze's other answers (issue 10): all-invalid 400, refusals without detail, 202 queued,
lower object limits, named rejections, update-only adds, the array cap, 404."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from target_braze_audience.client import BrazeClient, BrazeSettingError
from target_braze_audience.deltas import DeliveryIncompleteError
from target_braze_audience.store import MembershipStore

from sandbox import BrazeSandbox

BLOCKED = "provided external_id is blacklisted and disallowed"


def _sent_ids(braze: Any, h: Any) -> list[list[str]]:
    """external_ids of each /users/track request, in order."""
    return [[o["external_id"] for o in r.json["attributes"]] for r in h.track_requests(braze)]


def _rejected_rows(store: str) -> list[tuple[str, str, str, str | None]]:
    st = MembershipStore(store)
    try:
        return [(u, a, s, r) for u, a, _o, s, _at, r in st.pending_rows()]
    finally:
        st.close()


def test_lone_poison_user_answered_400_is_a_rejection_and_blocks_nothing(
    braze_sandbox: Any, store_url: str, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    b.reject({"u2": BLOCKED})
    cfg = h.braze_config(b, store_url)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    b.clear_requests()
    # Only u2 is pending: Braze answers 400 "Valid data must be provided ..." with errors.
    with caplog.at_level(logging.INFO):
        states, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    assert [r.status for r in h.track_requests(b)] == [400]
    assert states, "a run whose only problem is a rejected user completes and emits STATE"
    assert (summary.failed_requests, summary.rejected_objects) == (0, 1)
    assert f"Braze rejected user 'u2' (add a): {BLOCKED}" in caplog.text
    assert _rejected_rows(store_url) == [("u2", "a", "rejected", BLOCKED)]
    # Later members still arrive while u2 stays refused.
    b.clear_requests()
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3", "u4"]}))
    assert h.segments(b) == {"u1": ["a"], "u3": ["a"], "u4": ["a"]}
    assert _sent_ids(b, h) == [["u2", "u4"]]
    assert summary.rejected_objects == 1


@pytest.mark.parametrize("status", [400, 413])
def test_refusal_without_detail_is_split_until_the_object_is_isolated(
    braze_sandbox: Any, tmp_path: Path, h: Any, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    b.refuse_requests_with({"u5": "Bad Request"}, status=status)
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store, batch_size=10, max_concurrency=1)
    users = [f"u{i}" for i in range(10)]
    with caplog.at_level(logging.INFO):
        states, summary = h.run_target(cfg, h.audience_msgs({"a": users}))
    assert states
    assert h.segments(b) == {u: ["a"] for u in users if u != "u5"}
    # The halves of a refused request are retried as they come back from the worker pool, so
    # their order may vary; the requests themselves (the bisection down to u5) may not.
    sent = _sent_ids(b, h)
    assert sent[0] == users
    assert sorted(sent) == sorted(
        [
            users,
            users[:5],
            users[5:],
            ["u5", "u6", "u7"],
            ["u8", "u9"],
            ["u5", "u6"],
            ["u7"],
            ["u5"],
            ["u6"],
        ]
    )
    reason = f"Braze refused the request ({status} Bad Request)"
    assert _rejected_rows(store) == [("u5", "a", "rejected", reason)]
    assert f"Braze rejected user 'u5' (add a): {reason}" in caplog.text
    assert (summary.failed_requests, summary.rejected_objects) == (0, 1)
    assert summary.batch_size == 10, "a refused object is not a reason to send smaller requests"
    # Next run: only u5 again, refused again, still not a failure.
    b.clear_requests()
    states, summary = h.run_target(cfg, h.audience_msgs({"a": users}))
    assert (_sent_ids(b, h), summary.rejected_objects, bool(states)) == ([["u5"]], 1, True)


def test_202_queued_is_delivered_and_never_resent(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    b.queue_next(1)
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store)
    states, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert [r.status for r in h.track_requests(b)] == [202]
    assert (summary.queued_requests, summary.failed_requests, summary.audiences["a"].added) == (
        1,
        0,
        2,
    )
    assert states
    st = MembershipStore(store)
    assert st.memberships() == {("a", "u1"): True, ("a", "u2"): True}
    assert st.pending_rows() == []
    st.close()
    b.clear_requests()
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    assert h.track_requests(b) == [], "a queued request is not sent again"


def test_lower_object_limit_settles_batch_size(
    tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with BrazeSandbox(max_objects=50) as b:
        cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_concurrency=1)
        users = [f"u{i:04d}" for i in range(600)]
        with caplog.at_level(logging.INFO):
            states, summary = h.run_target(cfg, h.audience_msgs({"a": users}))
        assert states
        assert h.segments(b) == {u: ["a"] for u in users}
        sizes = [(len(r.json["attributes"]), r.status) for r in h.track_requests(b)]
        refused = [n for n, status in sizes if status == 400]
        assert refused
        assert all(n > 50 for n in refused)
        assert len(refused) <= 4, "bisection probes cost a few refused requests at most"
        settled = [i for i, (n, _s) in enumerate(sizes) if n == 50]
        assert settled, sizes
        assert all(n == 50 for n, _s in sizes[settled[0] : -1]), sizes
        assert summary.batch_size == 50
        assert summary.failed_requests == 0
        assert "batch_size settles at 50 objects per request" in caplog.text


def test_rejected_users_named_up_to_100_then_counted(
    braze_sandbox: Any, tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    users = [f"u{i:03d}" for i in range(110)]
    b.reject({u: BLOCKED for u in users[:105]})
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    with caplog.at_level(logging.INFO):
        states, summary = h.run_target(cfg, h.audience_msgs({"a": users}))
    assert states
    assert summary.rejected_objects == 105
    named = [r for r in caplog.records if r.getMessage().startswith("Braze rejected user")]
    assert len(named) == 100
    assert "... and 5 more rejected users" in caplog.text


def test_max_array_length_counts_and_warns(
    tmp_path: Path, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with BrazeSandbox(max_array_length=2) as b:
        cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), max_array_length=2)
        msgs = h.audience_msgs({"a": ["u1", "u2"], "b": ["u1"], "c": ["u1"]})
        with caplog.at_level(logging.INFO):
            _, summary = h.run_target(cfg, msgs)
        assert summary.over_array_length == 1
        assert "1 user(s) would hold more than max_array_length=2 values" in caplog.text
        assert "'u1'" in caplog.text
        # What Braze does beyond its cap: the oldest value is gone.
        assert b.user("u1")["lytics_segments"] == ["b", "c"]


def test_update_only_adds_reoffered_within_bound(
    braze_sandbox: Any, store_url: str, h: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = braze_sandbox
    b.add_user("u1")
    cfg = h.braze_config(b, store_url, update_existing_only=True)
    msgs = h.audience_msgs({"a": ["u1", "u2"]})
    _, summary = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"]}
    assert b.user("u2") is None, "Braze skipped the unknown user silently"
    assert summary.audiences["a"].update_only == 2
    # Not due yet (24 h by default): nothing is sent.
    b.clear_requests()
    h.run_target(cfg, msgs)
    assert h.track_requests(b) == []
    # u2 now exists in Braze; re-offers are due at once with update_only_reoffer_hours=0.
    b.add_user("u2")
    cfg.update(update_only_reoffer_hours=0, update_only_reoffers=2)
    b.clear_requests()
    with caplog.at_level(logging.INFO):
        _, summary = h.run_target(cfg, msgs)
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"]}
    assert sorted(_sent_ids(b, h)[0]) == ["u1", "u2"]
    assert all(
        o["_update_existing_only"] is True
        for r in h.track_requests(b)
        for o in r.json["attributes"]
    )
    assert (summary.reoffered, summary.audiences["a"].added) == (2, 0)
    assert "2 of them re-offers of earlier update-only adds" in caplog.text
    # Second and last re-offer; then the bound is reached and nothing more is sent.
    b.clear_requests()
    _, summary = h.run_target(cfg, msgs)
    assert (len(_sent_ids(b, h)), summary.reoffered, summary.update_only_gave_up) == (1, 2, 2)
    b.clear_requests()
    h.run_target(cfg, msgs)
    assert h.track_requests(b) == []


def test_update_only_reoffer_stops_when_member_leaves(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(
        b, str(tmp_path / "s.sqlite"), update_existing_only=True, update_only_reoffer_hours=0
    )
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2"]}))
    b.add_user("u1")
    b.add_user("u2")
    b.clear_requests()
    # u2 left: it gets a remove; only u1's add is re-offered.
    _, summary = h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    objs = {
        o["external_id"]: o["lytics_segments"]
        for r in h.track_requests(b)
        for o in r.json["attributes"]
    }
    assert objs == {"u1": {"add": ["a"]}, "u2": {"remove": ["a"]}}
    assert summary.reoffered == 1
    assert h.segments(b) == {"u1": ["a"]}


def test_404_names_api_key_and_rest_endpoint(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), rest_endpoint=b.url + "/nope")
    with pytest.raises(BrazeSettingError) as err:
        h.run_target(cfg, h.audience_msgs({"a": ["u1"]}))
    assert "`api_key`" in str(err.value)
    assert "`rest_endpoint`" in str(err.value)


def test_braze_refusing_everything_stops_the_run_instead_of_splitting_all(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    users = [f"u{i:03d}" for i in range(200)]
    b.refuse_requests_with({u: "Bad Request" for u in users})
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store, max_concurrency=1)
    with pytest.raises(DeliveryIncompleteError):
        h.run_target(cfg, h.audience_msgs({"a": users}))
    assert len(h.track_requests(b)) < 60, "bounded: not two requests per user"
    rows = _rejected_rows(store)
    assert len(rows) == 200, "every delta is kept"
    assert sum(1 for *_x, s, _r in rows if s == "rejected") == 20


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # A 2xx carrying a fatal message with per-object errors (rudder-transformer's Braze
        # tests show this shape): the named object is rejected, the request refused.
        (
            200,
            {
                "message": "Valid data must be provided in the 'attributes' field.",
                "errors": [
                    {"type": "'external_id' is required", "input_array": "attributes", "index": 1}
                ],
            },
            {"ok": False, "refused": True, "rejected": {1: "'external_id' is required"}},
        ),
        # Errors of other arrays, or without an index, name no attributes object.
        (
            400,
            {"message": "x", "errors": [{"type": "y", "input_array": "events", "index": 0}, "z"]},
            {"ok": False, "refused": True, "rejected": {}},
        ),
        (202, {"message": "queued"}, {"ok": True, "refused": False, "rejected": {}}),
        # A 2xx that is neither success nor queued and names nothing: not proof of delivery.
        (201, {}, {"ok": False, "refused": False, "rejected": {}}),
        (409, {"message": "conflict"}, {"ok": False, "refused": False, "rejected": {}}),
    ],
)
def test_client_reads_braze_answers(status: int, body: dict[str, Any], expected: dict) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = BrazeClient(
            api_key="k",
            rest_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
            rate_limit_per_second=0,
            max_retries=0,
            max_rate_limit_retries=0,
            request_timeout=5,
            retry_backoff_base=0,
            retry_backoff_max=0,
            stop=threading.Event(),
            logger=logging.getLogger("test"),
        )
        res = client.track({"attributes": [{"external_id": "u1"}, {"external_id": "u2"}]})
    finally:
        server.shutdown()
        server.server_close()
    got = {"ok": res.ok, "refused": res.refused is not None, "rejected": res.rejected}
    assert got == expected
    assert res.queued == (status == 202)
