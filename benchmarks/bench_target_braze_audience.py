"""Benchmark target-braze-audience: dry-run records/s and peak RSS; requests and values sent.

1. CPU: 300,000 `audience_members` records (100,000 users x 3 audiences, plus the three
   `audience_snapshots` records) at scale 1, side by side in one run:
   - a minimal plain singer-sdk target (BatchSink that discards, default jsonschema record
     validation) - the baseline, defined in this file (``--plain-target``);
   - target-braze-audience with ``dry_run: true`` on a fresh store (every membership is a
     new delta, the worst case: all 300,000 go through the store and the grouping).
   Each run is a fresh process; peak RSS is that process's own (os.wait4).
2. Economy, against the Braze sandbox (in this process): a first run (backfill) and a second
   run with enters and exits. Reported: requests sent vs the minimum ceil(users with
   changes / 75) and attribute values sent (the sandbox's data points) vs memberships changed.
3. Rate limit: the same delivery with ``rate_limit_per_second`` 20 and 40 (sandbox without
   limits): requests/s achieved during delivery (first to last request at the sandbox).

    python benchmarks/bench_target_braze_audience.py [--scale 1.0]
    python benchmarks/bench_target_braze_audience.py --array-write-mode set_when_cheaper
        # only the economy runs (2.), in that mode: compare with --array-write-mode delta
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import run_measured  # noqa: E402

BIN = Path(sys.executable).parent
API_KEY = "bench-braze-key"
AUDIENCES = ("high_value", "churn_risk", "newsletter")

MEMBER_SCHEMA = {
    "type": "object",
    "properties": {
        "audience_id": {"type": "string"},
        "audience_slug": {"type": "string"},
        "external_id": {"type": ["string", "null"]},
        "lytics_uid": {"type": ["string", "null"]},
        "scan_id": {"type": "string"},
        "email": {"type": ["string", "null"]},
    },
    "required": ["audience_slug"],
}
SNAPSHOT_SCHEMA = {
    "type": "object",
    "properties": {
        "audience_id": {"type": "string"},
        "audience_slug": {"type": "string"},
        "scan_id": {"type": "string"},
        "member_count": {"type": "integer"},
        "members_without_id": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"},
        "completed_at": {"type": "string", "format": "date-time"},
    },
}


def write_input(path: Path, members: dict[str, t.Iterable[int]], scan: str) -> int:
    """Write a tap-lytics-audience-shaped Singer stream; returns membership records."""
    n = 0
    with path.open("w") as f:
        for stream, schema in (
            ("audience_members", MEMBER_SCHEMA),
            ("audience_snapshots", SNAPSHOT_SCHEMA),
        ):
            f.write(
                json.dumps(
                    {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": []}
                )
                + "\n"
            )
        for aud, users in members.items():
            count = 0
            for i in users:
                rec = {
                    "audience_id": f"id-{aud}",
                    "audience_slug": aud,
                    "external_id": f"user{i}",
                    "lytics_uid": f"lu{i}",
                    "scan_id": f"{scan}-{aud}",
                    "email": f"user{i}@example.com",
                }
                f.write(
                    json.dumps({"type": "RECORD", "stream": "audience_members", "record": rec})
                    + "\n"
                )
                count += 1
            snap = {
                "audience_id": f"id-{aud}",
                "audience_slug": aud,
                "scan_id": f"{scan}-{aud}",
                "member_count": count,
                "members_without_id": 0,
                "started_at": "2024-01-01T00:00:00Z",
                "completed_at": "2024-01-01T00:10:00Z",
            }
            f.write(
                json.dumps({"type": "RECORD", "stream": "audience_snapshots", "record": snap})
                + "\n"
            )
            n += count
        f.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"scan": scan}}}) + "\n")
    return n


def plain_target_main(config: str) -> None:
    """The baseline: a minimal SDK target, default validation, discards records."""
    from singer_sdk import typing as th
    from singer_sdk.sinks import BatchSink
    from singer_sdk.target_base import Target

    class DiscardSink(BatchSink):
        def process_batch(self, context: dict) -> None:
            context["records"] = []

    class PlainTarget(Target):
        name = "plain-sdk-target"
        default_sink_class = DiscardSink
        config_jsonschema = th.PropertiesList(th.Property("x", th.StringType)).to_dict()

    PlainTarget.cli(args=["--config", config])


def _run(cmd: list[str], input_path: Path, work: Path) -> t.Any:
    with input_path.open("rb") as stdin:
        return run_measured(cmd, stdin=stdin, stdout=subprocess.DEVNULL, cwd=str(work))


def _run_cpu(cmd: list[str], input_path: Path, work: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of one fresh process (os.wait4)."""
    with input_path.open("rb") as stdin:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(work)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{cmd[0]} exited {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def bench_cpu(work: Path, scale: float) -> list[dict[str, t.Any]]:
    users = max(int(100_000 * scale), 100)
    inp = work / "braze_audience_input.jsonl"
    rows = write_input(inp, {a: range(users) for a in AUDIENCES}, "s1")
    plain_cfg = work / "plain.json"
    plain_cfg.write_text("{}")
    store = work / "dry_store.sqlite"
    cfg = work / "dry.json"
    cfg.write_text(
        json.dumps(
            {
                "api_key": API_KEY,
                "rest_endpoint": "http://127.0.0.1:9",
                "store_url": str(store),
                "dry_run": True,
            }
        )
    )
    plain_cmd = [sys.executable, __file__, "--plain-target", "--config", str(plain_cfg)]
    ours_cmd = [str(BIN / "target-braze-audience"), "--config", str(cfg)]
    # Interleaved (ours, plain, ours, plain, ours) so drift on a shared machine hits both.
    plain_runs, ours_runs = [], []
    for i in range(5):
        if i % 2:
            plain_runs.append(_run_cpu(plain_cmd, inp, work))
        else:
            store.unlink(missing_ok=True)  # dry run on a fresh store: every record is a delta
            ours_runs.append(_run_cpu(ours_cmd, inp, work))

    def med(runs: list[tuple[float, float, float]], k: int) -> float:
        vals = sorted(r[k] for r in runs)
        return vals[len(vals) // 2]

    base_wall, base_cpu = med(plain_runs, 0), med(plain_runs, 1)
    ours_wall, ours_cpu = med(ours_runs, 0), med(ours_runs, 1)
    return [
        {
            "benchmark": "target_braze_audience_cpu",
            "command": "plain singer-sdk target (BatchSink, default validation)",
            "rows": rows,
            "seconds": base_wall,
            "rows_per_s": rows / base_wall,
            "ratio_to_baseline": 1.0,
            "peak_rss_mb": max(r[2] for r in plain_runs),
            "notes": f"{users:,} users x 3 audiences; median of {len(plain_runs)}; CPU {base_cpu:.1f}s",
        },
        {
            "benchmark": "target_braze_audience_cpu",
            "command": "target-braze-audience dry_run (fresh SQLite store)",
            "rows": rows,
            "seconds": ours_wall,
            "rows_per_s": rows / ours_wall,
            "ratio_to_baseline": base_wall / ours_wall,
            "peak_rss_mb": max(r[2] for r in ours_runs),
            "notes": (
                f"x baseline records/s (issue: >= 4); median of {len(ours_runs)}; CPU {ours_cpu:.1f}s "
                f"= {base_cpu / ours_cpu:.1f}x less CPU; validation kept"
            ),
        },
    ]


def _delivery_run(
    braze: t.Any, work: Path, inp: Path, store: Path, **extra: t.Any
) -> tuple[float, int]:
    cfg = {"api_key": API_KEY, "rest_endpoint": braze.url, "store_url": str(store), **extra}
    path = work / "live.json"
    path.write_text(json.dumps(cfg))
    braze.clear_requests()
    m = _run([str(BIN / "target-braze-audience"), "--config", str(path)], inp, work)
    if m.returncode:
        raise RuntimeError(f"target-braze-audience exited {m.returncode}")
    return m.seconds, m.peak_rss_mb


def bench_sandbox(
    work: Path, scale: float, array_write_mode: str = "delta", rate_runs: bool = True
) -> list[dict[str, t.Any]]:
    """Economy (and, with `rate_runs`, rate-limit) runs against the sandbox.

    `array_write_mode` is the target setting: run once per mode to compare data points.
    """
    from sandbox import BrazeSandbox

    users = max(int(20_000 * scale), 200)
    results = []
    with BrazeSandbox(api_key=API_KEY) as braze:
        store = work / "live_store.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(store) + suffix).unlink(missing_ok=True)
        run1 = {a: list(range(users)) for a in AUDIENCES}
        # Run 2: 5% of users leave high_value, 2% new users join churn_risk, newsletter unchanged.
        leave = set(range(0, users, 20))
        join = list(range(users, users + users // 50))
        run2 = {
            "high_value": [i for i in range(users) if i not in leave],
            "churn_risk": list(range(users)) + join,
            "newsletter": list(range(users)),
        }
        for label, members, changed_users, changed in (
            ("backfill", run1, users, users * 3),
            ("enters+exits", run2, len(leave) + len(join), len(leave) + len(join)),
            ("unchanged", run2, 0, 0),
        ):
            inp = work / f"live_{label.replace('+', '_')}.jsonl"
            rows = write_input(inp, members, label)
            before = braze.stats["data_points"]
            secs, rss = _delivery_run(
                braze,
                work,
                inp,
                store,
                rate_limit_per_second=0,
                max_concurrency=4,
                array_write_mode=array_write_mode,
            )
            reqs = [r for r in braze.requests if r.path == "/users/track"]
            values = braze.stats["data_points"] - before
            minimum = math.ceil(changed_users / 75)
            results.append(
                {
                    "benchmark": "target_braze_audience_economy",
                    "command": f"target-braze-audience -> Braze sandbox ({label})"
                    + ("" if array_write_mode == "delta" else f", {array_write_mode}"),
                    "rows": rows,
                    "seconds": secs,
                    "rows_per_s": rows / secs,
                    "ratio_to_baseline": (len(reqs) / minimum)
                    if minimum
                    else (1.0 if not reqs else None),
                    "peak_rss_mb": rss,
                    "notes": (
                        f"requests {len(reqs)} vs minimum ceil({changed_users}/75)={minimum}; "
                        f"values sent (sandbox data points) {values} vs memberships changed "
                        f"{changed}"
                    ),
                }
            )
        if not rate_runs:
            return results
        # Rate limit: redeliver everything (fresh store, users already in Braze: add is idempotent).
        small = max(int(3_000 * scale), 1_500)
        inp = work / "live_rate.jsonl"
        rows = write_input(inp, {"rate_test": range(small)}, "r")
        for rate in (20, 40):
            Path(store).unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(str(store) + suffix).unlink(missing_ok=True)
            secs, rss = _delivery_run(
                braze, work, inp, store, rate_limit_per_second=rate, max_concurrency=8
            )
            times = sorted(r.time for r in braze.requests if r.path == "/users/track")
            achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
            results.append(
                {
                    "benchmark": "target_braze_audience_rate_limit",
                    "command": f"target-braze-audience rate_limit_per_second={rate}, 8 in flight",
                    "rows": rows,
                    "seconds": secs,
                    "rows_per_s": rows / secs,
                    "ratio_to_baseline": achieved / rate,
                    "peak_rss_mb": rss,
                    "notes": f"{len(times)} requests at {achieved:.1f} req/s (limit {rate}); ratio = achieved/limit",
                }
            )
    return results


def run(work: Path, scale: float = 1.0) -> list[dict[str, t.Any]]:
    work.mkdir(parents=True, exist_ok=True)
    return bench_cpu(work, scale) + bench_sandbox(work, scale)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--plain-target", action="store_true")
    parser.add_argument("--config")
    parser.add_argument(
        "--array-write-mode",
        choices=("delta", "set_when_cheaper"),
        help="only the sandbox economy runs, in this array_write_mode (compare both modes)",
    )
    args = parser.parse_args()
    if args.plain_target:
        plain_target_main(args.config)
        return
    os.environ.setdefault("LOGLEVEL", "WARNING")
    started = time.perf_counter()
    work = HERE / ".work" / "target_braze_audience"
    if args.array_write_mode:
        work.mkdir(parents=True, exist_ok=True)
        rows = bench_sandbox(work, args.scale, args.array_write_mode, rate_runs=False)
    else:
        rows = run(work, args.scale)
    from run import table  # the same markdown table `make bench` writes

    print(table(rows))
    print(f"\n(total {time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
