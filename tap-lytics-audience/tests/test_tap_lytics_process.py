"""The installed `tap-lytics-audience` executable: SIGTERM mid-scan, secrets in output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import LyticsSandbox


def executable() -> str:
    exe = Path(sys.executable).parent / "tap-lytics-audience"
    if exe.exists():
        return str(exe)
    found = shutil.which("tap-lytics-audience")
    if not found:
        pytest.fail("tap-lytics-audience executable not found: run `uv sync` at the repo root")
    return found


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_sigterm_mid_scan_exits_non_zero_without_snapshot(tmp_path):
    with LyticsSandbox() as sandbox:
        sandbox.add_audience("small", members=[{"braze_id": "s1"}])
        sandbox.generate_members("huge", 2_000_000)
        config = {
            "api_token": sandbox.api_token,
            "api_url": sandbox.url,
            "audiences": ["small", "huge"],
            "page_size": 100,
        }
        err_path = tmp_path / "stderr.log"
        err_file = err_path.open("w")
        proc = subprocess.Popen(
            [executable(), "--config", str(write_config(tmp_path, config))],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
        seen: list[dict] = []
        huge_members = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            seen.append(msg)
            if msg["type"] == "RECORD" and msg["stream"] == "audience_members":
                huge_members += msg["record"]["audience_slug"] == "huge"
                if huge_members >= 500:
                    break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()  # same buffer as the loop above: no line is split
        proc.wait(timeout=60)
        err_file.close()
        stderr = err_path.read_text()
        lines = rest.splitlines()
        assert all(line.endswith("}") for line in lines), "no truncated line on SIGTERM"
        seen.extend(json.loads(line) for line in lines if line.strip())
        served = sandbox.stats_snapshot()["members_served"]

    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    snapshots = [
        m["record"] for m in seen if m["type"] == "RECORD" and m["stream"] == "audience_snapshots"
    ]
    assert snapshots == []  # snapshots follow all member scans; an interrupted run has none
    small = [
        m for m in seen if m["type"] == "RECORD" and m["record"].get("audience_slug") == "small"
    ]
    assert len(small) == 1  # the small audience was fully scanned, still no snapshot
    assert served < 2_000_000
    assert "Interrupted by signal" in stderr
    assert sandbox.api_token not in stderr


def test_token_never_appears_in_output_or_logs(tmp_path):
    secret = "tok-SECRET-9f8e7d6c"
    with LyticsSandbox(api_token=secret) as sandbox:
        sandbox.add_audience("a", members=[{"braze_id": "x", "_uid": "l"}, {"_uid": "no-id"}])
        aid = sandbox.audience("a")["id"]
        sandbox.fail_next(1, status=503, path_prefix=f"/api/segment/{aid}/scan")
        ok_cfg = write_config(
            tmp_path,
            {
                "api_token": secret,
                "api_url": sandbox.url,
                "audiences": ["a"],
                "retry_backoff_base": 0.01,
            },
        )
        env = {**os.environ, "TAP_LYTICS_AUDIENCE_LOG_LEVEL": "DEBUG"}
        ok = subprocess.run(
            [executable(), "--config", str(ok_cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        about = subprocess.run(
            [executable(), "--config", str(ok_cfg), "--about"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        bad_cfg = tmp_path / "bad.json"
        bad_cfg.write_text(
            json.dumps({"api_token": secret + "-wrong", "api_url": sandbox.url, "audiences": ["a"]})
        )
        bad = subprocess.run(
            [executable(), "--config", str(bad_cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert '"audience_snapshots"' in ok.stdout
    assert "answered 503 on /api/segment/" in ok.stderr  # the 503 was retried and logged
    assert "; retry 1/" in ok.stderr
    assert bad.returncode != 0
    assert "api_token" in bad.stderr
    for output in (ok.stdout, ok.stderr, about.stdout, about.stderr, bad.stdout, bad.stderr):
        assert secret not in output
