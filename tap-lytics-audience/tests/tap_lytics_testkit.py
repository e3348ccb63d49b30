"""Helpers shared by the tap's test modules (imported by module name): members, scan requests."""

from __future__ import annotations

import datetime


def parse(ts: str) -> datetime.datetime:
    """An ISO-8601 timestamp (trailing Z allowed) as an aware datetime."""
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def scan_requests(sandbox, audience_id: str | None = None):  # type: ignore[no-untyped-def]
    """The sandbox's scan requests so far, of one audience when `audience_id` is given."""
    reqs = [r for r in sandbox.requests_snapshot() if r.path.endswith("/scan")]
    if audience_id:
        reqs = [r for r in reqs if r.path == f"/api/segment/{audience_id}/scan"]
    return reqs


def members(n: int, prefix: str = "u") -> list[dict]:
    """`n` Lytics profiles with `braze_id` and `email` (prefix + index) and a `_uid`."""
    return [
        {"_uid": f"lu{i}", "braze_id": f"{prefix}{i}", "email": f"{prefix}{i}@x.io"}
        for i in range(n)
    ]
