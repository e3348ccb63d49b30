"""Concurrent runners on one PostgreSQL store: real processes, real PostgreSQL, the sandbox.

Each runner holds the audiences it reads (a PostgreSQL advisory lock per audience, held to
the end of the run); the runs are made to overlap by holding back the end of their input
until PostgreSQL shows both holding their audiences at the same time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from target_braze_audience.store import AUDIENCE_LOCK_CLASS, MembershipStore, audience_lock_key

EXE = Path(sys.executable).parent / "target-braze-audience"


class Run:
    """One target process; its input is written in parts, its logs go to files."""

    def __init__(self, name: str, cfg: dict[str, Any], tmp_path: Path, h: Any) -> None:
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.h = h
        (self.dir / "config.json").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen(
            [str(EXE), "--config", str(self.dir / "config.json")],
            stdin=subprocess.PIPE,
            stdout=(self.dir / "stdout").open("wb"),
            stderr=(self.dir / "stderr").open("wb"),
            env={**os.environ, "LOGLEVEL": "INFO"},
        )
        self.pid = self.proc.pid

    def send(self, msgs: list[dict[str, Any]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.h.to_lines(msgs).encode())
        self.proc.stdin.flush()

    def close(self, msgs: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        if msgs:
            self.send(list(msgs))
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self) -> tuple[int, bytes, str]:
        self.proc.wait(timeout=60)
        return (
            self.proc.returncode,
            (self.dir / "stdout").read_bytes(),
            (self.dir / "stderr").read_text(),
        )

    def run(self, msgs: list[dict[str, Any]]) -> tuple[int, bytes, str]:
        self.close(msgs)
        return self.wait()


def _audience_locks(pg_url: str) -> set[tuple[int, int]]:
    """(process id of the target, audience lock key) for every audience lock held now."""
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT a.application_name, l.objid FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.classid = %s AND l.objsubid = 2",
                (AUDIENCE_LOCK_CLASS,),
            ).all()
    finally:
        engine.dispose()
    out = set()
    for app, objid in rows:
        m = re.search(r"pid=(\d+) ", app or "")
        if m:
            out.add((int(m.group(1)), int(objid)))
    return out


def _holds(pg_url: str, *pairs: tuple[Run, str]) -> bool:
    locks = _audience_locks(pg_url)
    return all((run.pid, audience_lock_key(aud)) in locks for run, aud in pairs)


def _adds(braze: Any, h: Any) -> Counter[tuple[str, str]]:
    """(user, audience) -> how many times Braze was asked to add it."""
    return Counter(
        (obj["external_id"], aud)
        for r in h.track_requests(braze)
        for obj in r.json["attributes"]
        for aud in obj["lytics_segments"].get("add", [])
    )


def test_two_runners_on_disjoint_audiences_share_one_postgres_store(
    braze_sandbox: Any, pg_store_url: str, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, pg_store_url, max_concurrency=2)
    users = {"a": [f"u{i}" for i in range(300)], "b": [f"u{i}" for i in range(200, 500)]}
    msgs = {aud: h.audience_msgs({aud: us}) for aud, us in users.items()}
    # Both start at the same moment on an empty database (both create the schema).
    runs = {aud: Run(aud, cfg, tmp_path, h) for aud in users}
    for aud, run in runs.items():
        run.send(msgs[aud][:-2])  # every member; the snapshot and STATE are held back
    # Both hold their audience at the same time: the runs really overlap.
    assert h.wait_for(lambda: _holds(pg_store_url, (runs["a"], "a"), (runs["b"], "b")), 30), [
        run.dir.joinpath("stderr").read_text()[-2000:] for run in runs.values()
    ]
    for aud, run in runs.items():
        run.close(msgs[aud][-2:])
    for run in runs.values():
        rc, out, err = run.wait()
        assert rc == 0, err[-3000:]
        assert json.loads(out) == {"bookmarks": {"audience_members": {"run": 1}}}
        assert "held by another run" not in err
    expected = {
        u: sorted(a for a, us in users.items() if u in us) for us in users.values() for u in us
    }
    assert h.segments(b) == expected
    assert set(_adds(b, h).values()) == {1}  # each membership delivered once
    assert set(_adds(b, h)) == {(u, a) for a, us in users.items() for u in us}
    st = MembershipStore(pg_store_url, dry_run=True)
    try:
        assert st.memberships() == {(a, u): True for a, us in users.items() for u in us}
        assert st.pending_rows() == []
    finally:
        st.close()


def test_same_audience_is_delivered_by_one_runner_only(
    braze_sandbox: Any, pg_store_url: str, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, pg_store_url)
    # An earlier run left x1's add to 'a' in the store (rejected: retried by later runs).
    b.reject({"x1": "blocked for the test"})
    h.run_target(cfg, h.audience_msgs({"a": ["x1"]}, complete=[]))
    b.unreject("x1")
    b.clear_requests()
    users_a = ["x1", *(f"u{i}" for i in range(100))]
    msgs_a = h.audience_msgs({"a": users_a})

    holder = Run("holder", cfg, tmp_path, h)
    holder.send(msgs_a[:-2])
    assert h.wait_for(lambda: _holds(pg_store_url, (holder, "a")), 30)

    # A dry run (no locks) of other audiences runs alongside.
    rc, out, err = Run("dry", {**cfg, "dry_run": True}, tmp_path, h).run(
        h.audience_msgs({"d": ["d1"]})
    )
    assert rc == 0, err[-3000:]

    # Same audience at the same moment: refused, naming the audience and the run holding
    # it; the run's other audience is delivered; it exits 1 without STATE.
    rc, out, err = Run("second", cfg, tmp_path, h).run(
        h.audience_msgs({"a": users_a, "c": ["c1", "c2"]})
    )
    assert rc == 1, err[-3000:]
    assert out == b""
    assert "Audience 'a' is held by another run" in err
    assert f"'a' (held by target-braze-audience pid={holder.pid} " in err
    assert "Traceback" not in err

    # A run without 'a' in its input leaves 'a's leftover delta (x1) to the run holding it.
    rc, out, err = Run("third", cfg, tmp_path, h).run(h.audience_msgs({"e": ["e1"]}))
    assert rc == 0, err[-3000:]
    assert "Audience 'a': deltas left from earlier runs are not delivered by this run" in err
    assert f"target-braze-audience pid={holder.pid} " in err
    assert not [k for k in _adds(b, h) if k[1] == "a"]
    assert h.segments(b) == {"c1": ["c"], "c2": ["c"], "e1": ["e"]}

    rc, out, err = holder.run(msgs_a[-2:])
    assert rc == 0, err[-3000:]
    adds = _adds(b, h)
    assert {u: n for (u, a), n in adds.items() if a == "a"} == dict.fromkeys(users_a, 1)
    assert h.segments(b) == {
        **{u: ["a"] for u in users_a},
        "c1": ["c"],
        "c2": ["c"],
        "e1": ["e"],
    }
