"""The braze-sandbox / lytics-sandbox console scripts as real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@contextmanager
def running(*argv: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    exe = BIN / argv[0]
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `uv sync` at the workspace root")
    proc = subprocess.Popen(
        [str(exe), *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = ""
        assert proc.stdout is not None
        for _ in range(5):
            line = proc.stdout.readline()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert url, f"no URL printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    return out


def test_braze_cli_serves_until_sigterm(http, tmp_path) -> None:
    seed = tmp_path / "users.json"
    seed.write_text(json.dumps({"users": {"u1": {"lytics_segments": ["a"]}}}))
    argv = ("braze-sandbox", "--port", "0", "--api-key", "cli-key", "--rate-limit", "2")
    with running(
        *argv,
        *("--rate-limit-window", "60", "--max-array-length", "2", "--max-recorded-requests", "3"),
        *("--seed-file", str(seed)),
    ) as (proc, url):
        auth = {"Authorization": "Bearer cli-key"}
        body = {"attributes": [{"external_id": "u1", "lytics_segments": {"add": ["b", "c"]}}]}
        r = http(url + "/users/track", "POST", body, auth)
        assert r.status == 201
        assert r.headers["x-ratelimit-limit"] == "2"
        assert (
            http(
                url + "/users/track", "POST", body, {"Authorization": "Bearer sandbox-braze-key"}
            ).status
            == 401
        )
        assert http(url + "/users/track", "POST", body, auth).status == 201
        assert http(url + "/users/track", "POST", body, auth).status == 429
        assert http(url + "/_sandbox/users").json == {
            "u1": {"external_id": "u1", "lytics_segments": ["b", "c"]}
        }
        recorded = http(url + "/_sandbox/requests").json
        assert [r["status"] for r in recorded] == [401, 201, 429]
        assert all(r["headers"]["authorization"] == "<redacted>" for r in recorded)
        stats = http(url + "/_sandbox/stats").json
        assert stats["requests"] == 4
        assert stats["rate_limited"] == 1
        assert http(url + "/_sandbox/rate_limit", "POST", {"limit": None}).status == 200
        assert http(url + "/_sandbox/fail_next", "POST", {"n": 1, "status": 503}).status == 200
        assert http(url + "/users/track", "POST", body, auth).status == 503
        out = stop(proc, signal.SIGTERM)
        assert "stopped" in out
        assert "cli-key" not in out


def test_lytics_cli_seed_and_options(http, tmp_path) -> None:
    seed = tmp_path / "audiences.json"
    seed.write_text(
        json.dumps(
            {
                "audiences": [
                    {"slug": "vip", "name": "VIP", "members": [{"_uid": "1", "braze_id": "u1"}]},
                    {"slug": "big", "generate": {"n": 120, "prefix": "b"}},
                ]
            }
        )
    )
    argv = ("lytics-sandbox", "--port", "0", "--api-token", "tok", "--cursor-key", "next")
    argv += ("--scan-page-delay", "0.2")
    with running(*argv, "--seed-file", str(seed), "--max-collect-bytes", "100") as (proc, url):
        auth = {"Authorization": "tok"}
        t0 = time.monotonic()
        assert http(url + "/api/segment/vip/scan", headers=auth).status == 200
        assert time.monotonic() - t0 >= 0.2  # --scan-page-delay
        segs = http(url + "/api/segment?table=user", headers=auth).json["data"]
        assert sorted(s["slug_name"] for s in segs) == ["big", "vip"]
        page = http(url + "/api/segment/big/scan?limit=100", headers=auth).json
        assert len(page["data"]) == 100
        assert "next" in page
        assert "_next" not in page
        assert (
            http(url + "/api/segment", headers={"Authorization": "sandbox-lytics-token"}).status
            == 401
        )
        assert http(url + "/collect/json/s", "POST", [{"x": "y" * 200}], auth).status == 413
        assert http(url + "/collect/json/s", "POST", [{"x": 1}], auth).status == 200
        assert http(url + "/_sandbox/collected?stream=s").json == [{"x": 1}]
        assert http(url + "/_sandbox/expire_cursors", "POST").status == 200
        r = http(url + f"/api/segment/big/scan?start={page['next']}", headers=auth)
        assert r.status == 400
        stop(proc, signal.SIGINT)


def test_cli_bad_seed_file_fails_clearly(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [str(BIN / "lytics-sandbox"), "--port", "0", "--seed-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "bad.json" in proc.stderr


def test_cli_help_lists_every_option() -> None:
    out = subprocess.run(
        [str(BIN / "braze-sandbox"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for opt in (
        "--host",
        "--port",
        "--api-key",
        "--rate-limit",
        "--rate-limit-window",
        "--max-array-length",
        "--max-objects",
        "--seed-file",
    ):
        assert opt in out
    out = subprocess.run(
        [str(BIN / "lytics-sandbox"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for opt in (
        "--host",
        "--port",
        "--api-token",
        "--cursor-key",
        "--cursor-ttl",
        "--max-collect-bytes",
        "--rate-limit",
        "--seed-file",
    ):
        assert opt in out
