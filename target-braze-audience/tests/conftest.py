"""Fixtures: a real PostgreSQL server, store backends, Singer message builders."""

from __future__ import annotations

import contextlib
import gzip
import io
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from target_braze_audience.target import TargetBrazeAudience

API_KEY = "sandbox-braze-key"

MEMBER_SCHEMA = {
    "type": "object",
    "properties": {
        "audience_id": {"type": ["string", "null"]},
        "audience_slug": {"type": "string"},
        "external_id": {"type": ["string", "null"]},
        "lytics_uid": {"type": ["string", "null"]},
        "scan_id": {"type": ["string", "null"]},
    },
}
SNAPSHOT_SCHEMA = {
    "type": "object",
    "properties": {
        "audience_id": {"type": ["string", "null"]},
        "audience_slug": {"type": "string"},
        "scan_id": {"type": ["string", "null"]},
        "member_count": {"type": "integer"},
        "members_without_id": {"type": ["integer", "null"]},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


# -- PostgreSQL (the session server is the `pg_url` fixture of sandbox.pytest_plugin) ------


def _reset_pg(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for table in (
            "braze_membership",
            "braze_pending",
            "braze_audience",
            "braze_store_meta",
            "braze_member_uid",
        ):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    url = request.getfixturevalue("pg_url")
    _reset_pg(url)
    return url


@pytest.fixture
def pg_store_url(pg_url: str) -> str:
    """A fresh, empty PostgreSQL store."""
    _reset_pg(pg_url)
    return pg_url


# -- Singer messages --------------------------------------------------------------------


def schema_msgs() -> list[dict[str, Any]]:
    return [
        {
            "type": "SCHEMA",
            "stream": "audience_members",
            "schema": MEMBER_SCHEMA,
            "key_properties": [],
        },
        {
            "type": "SCHEMA",
            "stream": "audience_snapshots",
            "schema": SNAPSHOT_SCHEMA,
            "key_properties": [],
        },
    ]


def member(
    aud: str, user: str | None, scan: str | None = "scan1", uid: str | None = None
) -> dict[str, Any]:
    rec = {
        "audience_id": f"id-{aud}",
        "audience_slug": aud,
        "external_id": user,
        "lytics_uid": uid or f"l{user}",
        "scan_id": scan,
    }
    return {"type": "RECORD", "stream": "audience_members", "record": rec}


def snapshot(aud: str, count: int, scan: str | None = "scan1") -> dict[str, Any]:
    rec = {
        "audience_id": f"id-{aud}",
        "audience_slug": aud,
        "scan_id": scan,
        "member_count": count,
        "members_without_id": 0,
        "started_at": "2024-01-01T00:00:00Z",
        "completed_at": "2024-01-01T00:01:00Z",
    }
    return {"type": "RECORD", "stream": "audience_snapshots", "record": rec}


def state(n: int = 1) -> dict[str, Any]:
    return {"type": "STATE", "value": {"bookmarks": {"audience_members": {"run": n}}}}


def audience_msgs(
    audiences: dict[str, Iterable[str]],
    *,
    complete: Iterable[str] | None = None,
    scan: str = "scan1",
) -> list[dict[str, Any]]:
    """Messages of a tap run: members per audience, then a snapshot for the complete ones."""
    out = schema_msgs()
    done = set(audiences) if complete is None else set(complete)
    for aud, users in audiences.items():
        users = list(users)
        out += [member(aud, u, scan) for u in users]
        if aud in done:
            out.append(snapshot(aud, len(users), scan))
    out.append(state())
    return out


def to_lines(msgs: Iterable[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(m).decode() + "\n" for m in msgs)


def run_target(
    config: dict[str, Any], msgs: Iterable[dict[str, Any]] | str
) -> tuple[list[Any], Any]:
    """Run the target in-process; returns (STATE values written to stdout, summary)."""
    text = msgs if isinstance(msgs, str) else to_lines(msgs)
    out = io.StringIO()
    target = TargetBrazeAudience(config=config)
    with contextlib.redirect_stdout(out):
        target.listen(io.StringIO(text))
    states = [orjson.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return states, target.last_summary


def braze_config(braze: Any, store: str, **extra: Any) -> dict[str, Any]:
    cfg = {
        "api_key": API_KEY,
        "rest_endpoint": braze.url,
        "store_url": store,
        "retry_backoff_base": 0.01,
        "rate_limit_per_second": 0,
    }
    cfg.update(extra)
    return cfg


def segments(braze: Any, attr: str = "lytics_segments") -> dict[str, list[str]]:
    """user -> sorted attribute values (users without the attribute or empty are omitted)."""
    out = {}
    for uid, attrs in braze.users().items():
        vals = attrs.get(attr)
        if vals:
            out[uid] = sorted(vals)
    return out


def track_requests(braze: Any) -> list[Any]:
    return [r for r in braze.requests if r.path == "/users/track"]


def batch_msg(dir_: Path, stream: str, records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Write `records` as a gzipped JSONL batch file in `dir_`; return the BATCH message."""
    path = dir_ / f"{name}.json.gz"
    with gzip.open(path, "wb") as fh:
        fh.writelines(orjson.dumps(r) + b"\n" for r in records)
    return {
        "type": "BATCH",
        "stream": stream,
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "manifest": [path.as_uri()],
    }


def wait_for(cond: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Helpers:
    """Message builders and run helpers, handed to tests through the `h` fixture."""

    API_KEY = API_KEY
    schema_msgs = staticmethod(schema_msgs)
    member = staticmethod(member)
    snapshot = staticmethod(snapshot)
    state = staticmethod(state)
    audience_msgs = staticmethod(audience_msgs)
    to_lines = staticmethod(to_lines)
    run_target = staticmethod(run_target)
    braze_config = staticmethod(braze_config)
    segments = staticmethod(segments)
    track_requests = staticmethod(track_requests)
    wait_for = staticmethod(wait_for)
    batch_msg = staticmethod(batch_msg)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
