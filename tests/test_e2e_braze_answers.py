"""Braze's other answers through the real pipeline (issue 10): tap-lytics-audience piped into
target-braze-audience, and `meltano run`, against the sandboxes."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_helpers import BIN, Meltano, pipe

BLOCKED = "provided external_id is blacklisted and disallowed"


def member(i: int) -> dict:
    return {"_uid": f"lu{i}", "braze_id": f"u{i}"}


def track_requests(braze) -> list:
    return [r for r in braze.requests if r.path == "/users/track"]


def holders(braze, audience: str) -> set[str]:
    return {
        uid
        for uid, attrs in braze.users().items()
        if audience in (attrs.get("lytics_segments") or [])
    }


def test_meltano_rejected_only_run_exits_0_and_queued_request_not_resent(
    meltano: Meltano, lytics_sandbox, braze_sandbox, tmp_path: Path
) -> None:
    lytics_sandbox.add_audience("vip", members=[member(i) for i in range(50)])
    meltano.set(
        TAP_LYTICS_AUDIENCE_API_URL=lytics_sandbox.url,
        TAP_LYTICS_AUDIENCE_API_TOKEN=lytics_sandbox.api_token,
        TAP_LYTICS_AUDIENCE_AUDIENCES=["vip"],
        TARGET_BRAZE_AUDIENCE_REST_ENDPOINT=braze_sandbox.url,
        TARGET_BRAZE_AUDIENCE_API_KEY=braze_sandbox.api_key,
        TARGET_BRAZE_AUDIENCE_STORE_URL=str(tmp_path / "store.sqlite"),
    )
    braze_sandbox.reject({"u7": BLOCKED, "u8": BLOCKED})
    job = ("run", "tap-lytics-audience", "target-braze-audience")
    first = meltano.run(*job)
    assert first.returncode == 0, first.stderr[-4000:]
    assert holders(braze_sandbox, "vip") == {f"u{i}" for i in range(50)} - {"u7", "u8"}

    # Only the two rejected users are pending: Braze answers 400 "Valid data must be
    # provided ..." naming both. Reported and kept, not a failure.
    braze_sandbox.clear_requests()
    second = meltano.run(*job)
    assert second.returncode == 0, second.stderr[-4000:]
    assert [r.status for r in track_requests(braze_sandbox)] == [400]
    for user in ("u7", "u8"):
        assert f"Braze rejected user '{user}' (add vip): {BLOCKED}" in second.stderr
    assert "rejected objects=2 failed requests=0" in second.stderr

    # Braze is in maintenance and queues the next request (202): it counts as delivered.
    braze_sandbox.reject({})
    braze_sandbox.queue_next(1)
    lytics_sandbox.set_members("vip", [member(i) for i in range(60)])
    braze_sandbox.clear_requests()
    third = meltano.run(*job)
    assert third.returncode == 0, third.stderr[-4000:]
    assert [r.status for r in track_requests(braze_sandbox)] == [202]
    assert "queued (202)=1" in third.stderr
    assert holders(braze_sandbox, "vip") == {f"u{i}" for i in range(60)}

    braze_sandbox.clear_requests()
    fourth = meltano.run(*job)
    assert fourth.returncode == 0, fourth.stderr[-4000:]
    assert track_requests(braze_sandbox) == [], "nothing answered 202 is sent again"


def test_piped_split_isolates_refused_object_and_batch_size_settles(
    lytics_sandbox, braze_sandbox, write_config, tmp_path: Path
) -> None:
    users = list(range(700))
    lytics_sandbox.add_audience("vip", members=[member(i) for i in users])
    braze_sandbox.max_objects = 50  # a "Monthly Active Users" contract
    braze_sandbox.refuse_requests_with({"u33": "Payload Too Large"}, status=413)
    tap_cfg = write_config(
        "tap",
        {
            "api_url": lytics_sandbox.url,
            "api_token": lytics_sandbox.api_token,
            "audiences": ["vip"],
        },
    )
    target_cfg = write_config(
        "target",
        {
            "rest_endpoint": braze_sandbox.url,
            "api_key": braze_sandbox.api_key,
            "store_url": str(tmp_path / "store.sqlite"),
            "max_concurrency": 1,
        },
    )
    tap_rc, target_rc, out, err = pipe(
        [str(BIN / "tap-lytics-audience"), "--config", str(tap_cfg)],
        [str(BIN / "target-braze-audience"), "--config", str(target_cfg)],
    )
    assert (tap_rc, target_rc) == (0, 0), err[-4000:]
    # Everyone but the refused user is delivered; the refused user is named.
    assert holders(braze_sandbox, "vip") == {f"u{i}" for i in users} - {"u33"}
    assert (
        "Braze rejected user 'u33' (add vip): Braze refused the request (413 Payload Too Large)"
        in err
    )
    assert [json.loads(line) for line in out.splitlines() if line.strip()], "STATE emitted"
    # Requests over 50 objects were refused; the run settled on 50.
    sizes = [(len(r.json["attributes"]), r.status) for r in track_requests(braze_sandbox)]
    assert all(status == 400 for n, status in sizes if n > 50), sizes
    assert "batch_size settles at 50 objects per request" in err
    assert "batch_size=50" in err
    assert max(n for n, status in sizes if status == 201) == 50

    # Next run: only u33 is sent again (still refused: a rejection, exit 0).
    braze_sandbox.clear_requests()
    _tap_rc, target_rc, _out, err = pipe(
        [str(BIN / "tap-lytics-audience"), "--config", str(tap_cfg)],
        [str(BIN / "target-braze-audience"), "--config", str(target_cfg)],
    )
    assert target_rc == 0, err[-4000:]
    sent = [[o["external_id"] for o in r.json["attributes"]] for r in track_requests(braze_sandbox)]
    assert sent == [["u33"]]
