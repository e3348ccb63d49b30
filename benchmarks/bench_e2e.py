"""End to end: N memberships from the Lytics sandbox to the Braze sandbox, time and peak RSS per process.

    python benchmarks/bench_e2e.py [--scale 1.0]     # 1,000,000 memberships at scale 1

Both sandboxes run as their own CLI processes; tap and target are the installed executables piped
together, exactly as `meltano run` pipes them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from measure import run_pipeline

BIN = Path(sys.executable).parent
AUDIENCES = 4
TOKEN, KEY = "bench-lytics-token", "bench-braze-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/_sandbox/stats", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sandbox at {url} did not start")


def admin(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def run(work: Path, scale: float = 1.0) -> list[dict]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    per_audience = max(1000, int(1_000_000 * scale) // AUDIENCES)
    memberships = per_audience * AUDIENCES
    lport, bport = free_port(), free_port()
    lytics = subprocess.Popen(
        [str(BIN / "lytics-sandbox"), "--port", str(lport), "--api-token", TOKEN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    braze = subprocess.Popen(
        [str(BIN / "braze-sandbox"), "--port", str(bport), "--api-key", KEY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lurl, burl = f"http://127.0.0.1:{lport}", f"http://127.0.0.1:{bport}"
    try:
        wait_up(lurl)
        wait_up(burl)
        slugs = [f"audience_{i}" for i in range(AUDIENCES)]
        for slug in slugs:
            # The same users sit in every audience: one Braze object per user carries all audiences.
            admin(
                lurl,
                "/_sandbox/audiences",
                {"slug": slug, "name": slug, "generate": {"n": per_audience, "prefix": "user"}},
            )
        tap_cfg = work / "tap.json"
        tap_cfg.write_text(json.dumps({"api_url": lurl, "api_token": TOKEN, "audiences": slugs}))
        target_cfg = work / "target.json"
        target_cfg.write_text(
            json.dumps(
                {"rest_endpoint": burl, "api_key": KEY, "store_url": str(work / "store.sqlite")}
            )
        )
        tap_m, target_m, wall = run_pipeline(
            [str(BIN / "tap-lytics-audience"), "--config", str(tap_cfg)],
            [str(BIN / "target-braze-audience"), "--config", str(target_cfg)],
            cwd=str(work),
        )
        stats = admin(burl, "/_sandbox/stats")
        ok = tap_m.returncode == 0 and target_m.returncode == 0
        notes = (
            f"{'ok' if ok else 'FAILED'}; {AUDIENCES} audiences x {per_audience:,} users; "
            f"Braze requests {stats.get('requests')}, data points {stats.get('data_points')}"
        )
        return [
            {
                "benchmark": "e2e lytics->braze",
                "command": "tap-lytics-audience (pipeline)",
                "rows": memberships,
                "seconds": tap_m.seconds,
                "rows_per_s": memberships / wall,
                "peak_rss_mb": tap_m.peak_rss_mb,
                "notes": notes,
            },
            {
                "benchmark": "e2e lytics->braze",
                "command": "target-braze-audience (pipeline)",
                "rows": memberships,
                "seconds": wall,
                "rows_per_s": memberships / wall,
                "peak_rss_mb": target_m.peak_rss_mb,
                "notes": notes,
            },
        ]
    finally:
        for proc in (lytics, braze):
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    rows = run(Path(__file__).parent / ".work" / "bench_e2e", scale=parser.parse_args().scale)
    for row in rows:
        print(row)
