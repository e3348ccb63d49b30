"""Lytics audiences -> Braze `lytics_segments`, end to end through real `meltano run`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from e2e_helpers import BIN, Meltano, pipe

STATE_ID = "sandbox:tap-lytics-audience-to-target-braze-audience"
AUDIENCES = ["high_value", "cart_abandoners", "newsletter"]


def member(i: int) -> dict:
    return {"_uid": f"lu{i}", "braze_id": f"u{i}", "email": f"u{i}@example.com"}


def seed(lytics, memberships: dict[str, range | list[int]]) -> None:
    for slug, ids in memberships.items():
        lytics.add_audience(
            slug, name=slug.replace("_", " ").title(), members=[member(i) for i in ids]
        )


def expected_segments(memberships: dict[str, range | list[int]]) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {}
    for slug, ids in memberships.items():
        for i in ids:
            users.setdefault(f"u{i}", set()).add(slug)
    return users


def braze_segments(braze) -> dict[str, set[str]]:
    return {
        uid: set(attrs.get("lytics_segments") or [])
        for uid, attrs in braze.users().items()
        if attrs.get("lytics_segments")
    }


def track_requests(braze) -> list:
    return [r for r in braze.requests if r.path == "/users/track"]


@pytest.fixture
def configured(meltano: Meltano, lytics_sandbox, braze_sandbox, tmp_path: Path) -> Meltano:
    meltano.set(
        TAP_LYTICS_AUDIENCE_API_URL=lytics_sandbox.url,
        TAP_LYTICS_AUDIENCE_API_TOKEN=lytics_sandbox.api_token,
        TAP_LYTICS_AUDIENCE_AUDIENCES=AUDIENCES,
        TARGET_BRAZE_AUDIENCE_REST_ENDPOINT=braze_sandbox.url,
        TARGET_BRAZE_AUDIENCE_API_KEY=braze_sandbox.api_key,
        TARGET_BRAZE_AUDIENCE_STORE_URL=str(tmp_path / "store.sqlite"),
    )
    return meltano


def run_job(meltano: Meltano) -> None:
    proc = meltano.run("run", "tap-lytics-audience", "target-braze-audience")
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_backfill_then_only_deltas_then_nothing(configured: Meltano, lytics_sandbox, braze_sandbox):
    first = {"high_value": range(0, 300), "cart_abandoners": range(200, 400), "newsletter": []}
    seed(lytics_sandbox, first)
    run_job(configured)
    assert braze_segments(braze_sandbox) == expected_segments(first)
    # One object per user, at most 75 per request: the minimum number of requests.
    assert len(track_requests(braze_sandbox)) == math.ceil(400 / 75)
    assert braze_sandbox.stats["data_points"] == 300 + 200
    # Only the id and the attribute are sent: member_key, lytics_uid, scan_id are not.
    sent = [obj for r in track_requests(braze_sandbox) for obj in r.json["attributes"]]
    assert {frozenset(o) for o in sent} == {frozenset({"external_id", "lytics_segments"})}
    assert configured.state(STATE_ID), "meltano kept the run's state"

    # Second run: 20 users leave high_value, 30 join newsletter, 5 join cart_abandoners.
    second = {
        "high_value": range(20, 300),
        "cart_abandoners": range(195, 400),
        "newsletter": range(0, 30),
    }
    for slug, ids in second.items():
        lytics_sandbox.set_members(slug, [member(i) for i in ids])
    braze_sandbox.clear_requests()
    points_before = braze_sandbox.stats["data_points"]
    run_job(configured)
    assert braze_segments(braze_sandbox) == expected_segments(second)
    changed_users = set(range(0, 30)) | set(
        range(195, 200)
    )  # 0..19 leave+join, 20..29 join, 195..199 join
    assert len(track_requests(braze_sandbox)) == math.ceil(len(changed_users) / 75)
    assert braze_sandbox.stats["data_points"] - points_before == 20 + 30 + 5

    # Third run: nothing changed, nothing sent.
    braze_sandbox.clear_requests()
    run_job(configured)
    assert track_requests(braze_sandbox) == []
    assert braze_segments(braze_sandbox) == expected_segments(second)


def test_tap_crash_mid_scan_removes_nobody(configured: Meltano, lytics_sandbox, braze_sandbox):
    first = {"high_value": range(0, 250), "cart_abandoners": [], "newsletter": []}
    seed(lytics_sandbox, first)
    run_job(configured)
    assert braze_segments(braze_sandbox) == expected_segments(first)

    # Everyone but 10 users leaves, but the scan dies after its first page.
    lytics_sandbox.set_members("high_value", [member(i) for i in range(0, 10)])
    configured.set(TAP_LYTICS_AUDIENCE_PAGE_SIZE=5, TAP_LYTICS_AUDIENCE_MAX_RETRIES=1)
    lytics_sandbox.fail_next(1000, status=503, path_prefix="/api/segment/")
    braze_sandbox.clear_requests()
    proc = configured.run("run", "tap-lytics-audience", "target-braze-audience")
    assert proc.returncode != 0
    # Nobody was removed.
    assert braze_segments(braze_sandbox) == expected_segments(first)
    for req in track_requests(braze_sandbox):
        for obj in req.json.get("attributes", []):
            assert "remove" not in obj["lytics_segments"]


def test_braze_429_and_5xx_storms_end_correct(configured: Meltano, lytics_sandbox, braze_sandbox):
    memberships = {
        "high_value": range(0, 600),
        "cart_abandoners": range(300, 700),
        "newsletter": range(0, 50),
    }
    seed(lytics_sandbox, memberships)
    braze_sandbox.rate_limit = 3
    braze_sandbox.rate_limit_window = 1.0
    braze_sandbox.fail_next(4, status=503, path_prefix="/users/track")
    braze_sandbox.fail_next(3, status=429, path_prefix="/users/track")
    run_job(configured)
    assert braze_segments(braze_sandbox) == expected_segments(memberships)
    statuses = [r.status for r in track_requests(braze_sandbox)]
    assert statuses.count(503) == 4
    assert statuses.count(429) >= 3  # the injected ones, plus any from the 3 requests/s limit
    assert braze_sandbox.stats["faults"] == 7


def test_rejected_users_delivered_next_run(configured: Meltano, lytics_sandbox, braze_sandbox):
    memberships = {"high_value": range(0, 100), "cart_abandoners": [], "newsletter": []}
    seed(lytics_sandbox, memberships)
    braze_sandbox.reject({"u7": "provided external_id is blacklisted and disallowed"})
    run_job(configured)
    got = braze_segments(braze_sandbox)
    assert "u7" not in got
    assert len(got) == 99

    braze_sandbox.reject({})
    braze_sandbox.clear_requests()
    run_job(configured)
    assert braze_segments(braze_sandbox) == expected_segments(memberships)
    sent = [obj for r in track_requests(braze_sandbox) for obj in r.json["attributes"]]
    assert [o["external_id"] for o in sent] == ["u7"], "only the rejected user is sent again"


def test_piped_processes_without_meltano(lytics_sandbox, braze_sandbox, write_config, tmp_path):
    memberships = {"high_value": range(0, 120), "newsletter": range(100, 130)}
    seed(lytics_sandbox, memberships)
    tap_cfg = write_config(
        "tap",
        {
            "api_url": lytics_sandbox.url,
            "api_token": lytics_sandbox.api_token,
            "audiences": list(memberships),
        },
    )
    target_cfg = write_config(
        "target",
        {
            "rest_endpoint": braze_sandbox.url,
            "api_key": braze_sandbox.api_key,
            "store_url": str(tmp_path / "store.sqlite"),
        },
    )
    tap_rc, target_rc, out, err = pipe(
        [str(BIN / "tap-lytics-audience"), "--config", str(tap_cfg)],
        [str(BIN / "target-braze-audience"), "--config", str(target_cfg)],
    )
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    assert braze_segments(braze_sandbox) == expected_segments(memberships)
    states = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert states, "the target emitted STATE after confirming its deltas"
    assert lytics_sandbox.api_token not in err
    assert braze_sandbox.api_key not in err
