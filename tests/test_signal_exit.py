"""One exit rule for signals in all four plugins: stopped by signal N, the process exits
128 + N (143 for SIGTERM, 130 for SIGINT), as a shell reports a process a signal killed, so
an orchestrator (Meltano, Airflow, a shell `&&`) never takes an interrupted run for a success.
Real processes, stopped mid-run; the output they leave is whole lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import BIN
from tap_braze_csv.sample import generate_export

SIGNALS = [signal.SIGTERM, signal.SIGINT]


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("the run did not get going")


def _config(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def _stop_tap(cmd: list[str], sig: signal.Signals, tmp_path: Path) -> tuple[int, str]:
    """Start a tap, signal it once its first RECORD is out, read the rest; (rc, stderr)."""
    err = tmp_path / "stderr"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err.open("wb"))
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # a pipe nobody reads would hold the tap mid-write
        lines.append(line)
        if line.startswith(b'{"type":"RECORD"') or line.startswith(b'{"type": "RECORD"'):
            break
    proc.send_signal(sig)
    lines += proc.stdout.readlines()
    proc.wait(timeout=60)
    assert lines
    for line in lines:  # whole lines only: nothing cut by the stop
        json.loads(line)
    return proc.returncode, err.read_text()


def _stop_target(
    cmd: list[str], lines: list[dict], running: Callable[[Path], bool], sig, tmp_path: Path
) -> tuple[int, str]:
    """Feed a target some messages, keep its input open, signal it once running."""
    err = tmp_path / "stderr"
    out = tmp_path / "stdout"
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        env={**os.environ, "LOGLEVEL": "DEBUG"},
    )
    assert proc.stdin is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    proc.stdin.flush()
    _wait_for(lambda: running(err), proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stdin.close()
    for line in out.read_bytes().splitlines():
        json.loads(line)
    return proc.returncode, err.read_text()


def _tap_braze_csv(sig, tmp_path: Path, **_: Any) -> tuple[int, str]:
    export = generate_export(tmp_path / "S-2024-01-01.csv", 20_000)
    cfg = _config(tmp_path, {"paths": [str(export)]})
    return _stop_tap([str(BIN / "tap-braze-csv"), "--config", cfg], sig, tmp_path)


def _tap_lytics_audience(sig, tmp_path: Path, lytics: Any, **_: Any) -> tuple[int, str]:
    lytics.generate_members("huge", 1_000_000)
    cfg = _config(
        tmp_path,
        {
            "api_token": lytics.api_token,
            "api_url": lytics.url,
            "audiences": ["huge"],
            "page_size": 100,
        },
    )
    return _stop_tap([str(BIN / "tap-lytics-audience"), "--config", cfg], sig, tmp_path)


def _target_braze_audience(sig, tmp_path: Path, braze: Any, **_: Any) -> tuple[int, str]:
    cfg = _config(
        tmp_path,
        {
            "api_key": braze.api_key,
            "rest_endpoint": braze.url,
            "store_url": str(tmp_path / "store.sqlite"),
        },
    )
    schema = {"type": "object", "properties": {"audience_slug": {"type": "string"}}}
    member = {"audience_slug": "a", "external_id": "u1", "scan_id": "s1", "lytics_uid": "l1"}
    messages = [
        {"type": "SCHEMA", "stream": "audience_members", "schema": schema, "key_properties": []},
        {"type": "RECORD", "stream": "audience_members", "record": member},
    ]
    # The store is opened (and logged) when the first record is handled. Match the logged
    # path, not just the words: at DEBUG the SDK may log the settings' descriptions (one
    # starts "Membership store:") before the signal handlers exist (exited -15 once).
    store_line = re.compile(r"Membership store: \S*store\.sqlite")
    return _stop_target(
        [str(BIN / "target-braze-audience"), "--config", cfg],
        messages,
        lambda err: store_line.search(err.read_text()) is not None,
        sig,
        tmp_path,
    )


def _target_lytics_users(sig, tmp_path: Path, lytics: Any, **_: Any) -> tuple[int, str]:
    cfg = _config(
        tmp_path,
        {"api_token": lytics.api_token, "api_url": lytics.url, "max_batch_records": 1},
    )
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    messages = [
        {"type": "SCHEMA", "stream": "braze_users", "schema": schema, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "braze_users", "record": {"id": "u1"}},
        {"type": "RECORD", "stream": "braze_users", "record": {"id": "u2"}},
    ]
    # One record per body: the first one reaching Lytics shows the target is reading.
    return _stop_target(
        [str(BIN / "target-lytics-users"), "--config", cfg],
        messages,
        lambda _err: bool(lytics.collected("braze_users")),
        sig,
        tmp_path,
    )


PLUGINS = {
    "tap-braze-csv": _tap_braze_csv,
    "tap-lytics-audience": _tap_lytics_audience,
    "target-braze-audience": _target_braze_audience,
    "target-lytics-users": _target_lytics_users,
}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_stopped_by_a_signal_exits_128_plus_its_number(
    plugin: str, sig: signal.Signals, tmp_path: Path, lytics_sandbox, braze_sandbox
) -> None:
    rc, err = PLUGINS[plugin](sig, tmp_path, lytics=lytics_sandbox, braze=braze_sandbox)
    assert rc == 128 + sig, f"{plugin} exited {rc} on {sig.name}: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
