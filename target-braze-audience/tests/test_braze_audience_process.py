"""The installed executable: SIGTERM mid-run, exit codes, no secret in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from target_braze_audience.store import MembershipStore, resolve_store_url

EXE = Path(sys.executable).parent / "target-braze-audience"


def _start(cfg: dict[str, Any], tmp_path: Path) -> subprocess.Popen[bytes]:
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "LOGLEVEL": "DEBUG"}
    # Files, not pipes: DEBUG logs could fill a pipe and block the process.
    return subprocess.Popen(
        [str(EXE), "--config", str(cfg_path)],
        stdin=subprocess.PIPE,
        stdout=(tmp_path / "stdout").open("wb"),
        stderr=(tmp_path / "stderr").open("wb"),
        env=env,
    )


def _finish(
    proc: subprocess.Popen[bytes], tmp_path: Path, data: bytes | None = None
) -> tuple[bytes, bytes]:
    if data is not None:
        assert proc.stdin is not None
        proc.stdin.write(data)
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(timeout=60)
    return (tmp_path / "stdout").read_bytes(), (tmp_path / "stderr").read_bytes()


def _present(store: str) -> set[str]:
    st = MembershipStore(store)
    try:
        return {u for (_a, u), p in st.memberships().items() if p}
    finally:
        st.close()


def test_sigterm_while_reading_changes_nothing(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store)
    h.run_target(cfg, h.audience_msgs({"a": ["u1", "u2", "u3"]}))
    b.clear_requests()
    proc = _start(cfg, tmp_path)
    assert proc.stdin is not None
    # A new scan that leaves u2 and u3 out, then the tap hangs (no snapshot yet).
    proc.stdin.write(
        h.to_lines(
            [*h.schema_msgs(), h.member("a", "u1", "s2"), h.member("a", "u4", "s2")]
        ).encode()
    )
    proc.stdin.flush()
    # The store is opened (and logged) when the first record is handled.
    assert h.wait_for(
        lambda: (
            b"Membership store:" in (tmp_path / "stderr").read_bytes() or proc.poll() is not None
        )
    )
    h.wait_for(lambda: False, timeout=0.3)  # let it read the second line too
    proc.send_signal(signal.SIGTERM)
    out, err = _finish(proc, tmp_path)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert out == b""  # no STATE
    assert h.track_requests(b) == []
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"], "u3": ["a"]}
    assert _present(store) == {"u1", "u2", "u3"}
    st = MembershipStore(store)
    assert st.pending_rows() == []
    st.close()


def test_sigterm_during_delivery_keeps_store_consistent(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    store = str(tmp_path / "s.sqlite")
    cfg = h.braze_config(b, store, rate_limit_per_second=8, max_concurrency=2)
    users = [f"u{i}" for i in range(3000)]
    msgs = h.audience_msgs({"a": users})
    proc = _start(cfg, tmp_path)
    assert proc.stdin is not None
    proc.stdin.write(h.to_lines(msgs).encode())
    proc.stdin.close()
    assert h.wait_for(lambda: b.stats.get("accepted_requests", 0) >= 3)
    proc.send_signal(signal.SIGTERM)
    out, err = _finish(proc, tmp_path)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert out == b""  # no STATE: not everything was confirmed
    # Requests the stop kept from being sent are not "failed requests" (Braze failed nothing).
    summary = next(line for line in err.decode().splitlines() if "Summary: records=" in line)
    assert "failed requests=0 " in summary
    assert int(summary.split("not sent (stopping)=")[1].split()[0]) >= 1  # queued ones
    assert b"not delivered" not in err
    in_braze = set(h.segments(b))
    assert 0 < len(in_braze) < len(users)
    # Exactly what Braze accepted is marked delivered; the rest is still pending.
    assert _present(store) == in_braze
    st = MembershipStore(store)
    assert {u for u, *_ in st.pending_rows()} == set(users) - in_braze
    st.close()
    assert h.API_KEY.encode() not in err
    # The next run finishes the job with no duplicate data points.
    before = b.stats["data_points"]
    h.run_target({**cfg, "rate_limit_per_second": 0}, msgs)
    assert h.segments(b) == {u: ["a"] for u in users}
    assert b.stats["data_points"] - before == len(users) - len(in_braze)


def test_cli_wrong_key_exits_nonzero_without_leaking(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    secret = "s3cr3t-wrong-braze-rest-key"
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), api_key=secret)
    proc = _start(cfg, tmp_path)
    out, err = _finish(proc, tmp_path, h.to_lines(h.audience_msgs({"a": ["u1"]})).encode())
    assert proc.returncode == 1
    assert b"api_key" in err
    assert secret.encode() not in err
    assert secret.encode() not in out
    assert out == b""


def test_cli_success_logs_summary_and_state_without_key(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    proc = _start(cfg, tmp_path)
    out, err = _finish(proc, tmp_path, h.to_lines(h.audience_msgs({"a": ["u1", "u2"]})).encode())
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out) == {"bookmarks": {"audience_members": {"run": 1}}}
    text = err.decode()
    assert "Summary audience 'a': added=2 removed=0" in text
    assert '"metric":"http_request_duration"' in text
    assert '"metric":"record_count"' in text
    assert h.API_KEY not in text


def _store_opened(proc: subprocess.Popen[bytes], run_dir: Path, h: Any) -> bool:
    return bool(
        h.wait_for(
            lambda: (
                b"Membership store:" in (run_dir / "stderr").read_bytes() or proc.poll() is not None
            )
        )
        and proc.poll() is None
    )


def test_second_run_on_a_sqlite_store_in_use_is_refused(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    # Two real processes on one SQLite store (one writer): the second is refused at start
    # with a message naming the store and its lock file; the first delivers each delta
    # exactly once. (PostgreSQL stores are shared: test_braze_audience_concurrent.py.)
    b = braze_sandbox
    store_url = str(tmp_path / "store.sqlite")
    cfg = h.braze_config(b, store_url)
    users = [f"u{i}" for i in range(200)]
    msgs = h.audience_msgs({"a": users})
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = _start(cfg, first_dir)
    assert first.stdin is not None
    first.stdin.write(h.to_lines(msgs[:-2]).encode())  # all members; no snapshot/STATE yet
    first.stdin.flush()
    assert _store_opened(first, first_dir, h)

    second = _start(cfg, second_dir)
    out, err = _finish(second, second_dir, h.to_lines(msgs).encode())
    assert second.returncode == 1, err.decode()[-2000:]
    assert out == b""
    text = err.decode()
    assert "Another run is using the membership store" in text
    assert resolve_store_url(store_url).render_as_string(hide_password=True) in text
    assert f"(lock file {store_url}.lock)" in text
    assert "Traceback" not in text
    assert "database is locked" not in text
    assert h.track_requests(b) == []

    out, err = _finish(first, first_dir, h.to_lines(msgs[-2:]).encode())
    assert first.returncode == 0, err.decode()[-2000:]
    assert json.loads(out) == {"bookmarks": {"audience_members": {"run": 1}}}
    objects = [o["external_id"] for r in h.track_requests(b) for o in r.json["attributes"]]
    assert sorted(objects) == sorted(users)  # each delta delivered once
    assert b.stats["data_points"] == len(users)

    # The lock ends with the run: the next one starts (and has nothing to send).
    b.clear_requests()
    out, err = _finish(_start(cfg, second_dir), second_dir, h.to_lines(msgs).encode())
    assert out, err.decode()[-2000:]
    assert h.track_requests(b) == []


def test_sqlite_store_lock_is_released_by_kill_9(
    braze_sandbox: Any, tmp_path: Path, h: Any
) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    msgs = h.audience_msgs({"a": ["u1", "u2"]})
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    killed = _start(cfg, killed_dir)
    assert killed.stdin is not None
    killed.stdin.write(h.to_lines(msgs[:3]).encode())
    killed.stdin.flush()
    assert _store_opened(killed, killed_dir, h)
    killed.kill()
    killed.wait(timeout=30)
    proc = _start(cfg, tmp_path)
    out, err = _finish(proc, tmp_path, h.to_lines(msgs).encode())
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out) == {"bookmarks": {"audience_members": {"run": 1}}}
    assert h.segments(b) == {"u1": ["a"], "u2": ["a"]}


def _make_read_only(path: Path) -> None:
    """chmod for ordinary users; root ignores modes, so make the file immutable instead."""
    path.chmod(0o444)
    if os.access(path, os.W_OK):
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if proc.returncode != 0:
            pytest.skip("cannot make a file read-only for this user (root without chattr)")


@pytest.mark.parametrize("damage", ["not-sqlite", "truncated", "read-only"])
def test_unusable_store_file_is_one_clear_line_naming_it(
    braze_sandbox: Any, tmp_path: Path, h: Any, damage: str
) -> None:
    b = braze_sandbox
    store = tmp_path / "store.sqlite"
    cfg = h.braze_config(b, str(store))
    h.run_target(cfg, h.audience_msgs({"a": [f"u{i}" for i in range(300)]}))
    b.clear_requests()
    data = store.read_bytes()
    if damage == "not-sqlite":
        store.write_bytes(b"user_id,audience\n" * 200)
    elif damage == "truncated":
        store.write_bytes(data[: len(data) // 2])
    else:
        _make_read_only(store)
    try:
        proc = _start(cfg, tmp_path)
        out, err = _finish(proc, tmp_path, h.to_lines(h.audience_msgs({"a": ["u1", "x"]})).encode())
    finally:
        subprocess.run(["chattr", "-i", str(store)], capture_output=True, check=False)
    text = err.decode()
    assert proc.returncode == 1, text[-2000:]
    assert out == b""  # no STATE
    assert h.track_requests(b) == []  # nothing sent on a store that cannot record it
    expected = {
        "not-sqlite": "is not a SQLite database",
        "truncated": "is damaged (truncated or corrupt)",
        "read-only": "cannot be written: make the file and its directory writable",
    }[damage]
    errors = [line for line in text.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, errors
    assert f"The membership store {store} {expected}" in errors[0]
    assert "Traceback" not in text
