"""Benchmark tap-braze-csv: rows/s and peak RSS reading a generated Braze segment export.

Side by side on the same generated export (200,000 rows at scale 1, ~100 MB, the documented
User Data columns plus 4 custom attributes; see tap_braze_csv/sample.py):
- plain `csv.DictReader` + `json.dumps` writing one RECORD line per row (the baseline);
- tap-braze-csv with its defaults (compiled converters + buffered orjson writer);
- tap-braze-csv with `fast_writer: false` (every record through the SDK's record path);
- tap-braze-csv on a quarter of the rows, and on the same export zipped (what Braze sends);
- tap-csv-folder and tap-spreadsheets from PyPI, each in its own venv under .work/venvs/;
- the JSON-lines path: tap-braze-csv with `rest_export` against a `braze-sandbox` process
  (50,000 users at scale 1, see `sample_profiles`): trigger, download, read, users only and
  users plus `braze_engagement`.

Every command runs in a fresh process with stdout to a file; a run only counts when that
file holds one RECORD per row. Peak RSS is the process's own (os.wait4).

    python benchmarks/bench_tap_braze_csv.py [--scale 1.0]
    python benchmarks/bench_tap_braze_csv.py --plain FILE   (internal: the baseline loop)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import run_measured  # noqa: E402

BIN = Path(sys.executable).parent
BASE_ROWS = 200_000
BASE_JSON_USERS = 50_000
BRAZE_KEY = "bench-braze-key"


def plain_main(path: str) -> None:
    """The baseline: csv.DictReader + json.dumps, one Singer-style RECORD line per row."""
    out = sys.stdout
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            out.write(json.dumps({"type": "RECORD", "stream": "braze_users", "record": row}))
            out.write("\n")


def peer_venv(work: Path, package: str) -> Path:
    """Install a PyPI peer in its own venv under benchmarks/.work/ (never the workspace)."""
    venv = work.parent / "venvs" / package
    exe = venv / "bin" / package
    if not exe.exists():
        uv = shutil.which("uv") or "uv"
        subprocess.run([uv, "venv", "-q", "--python", "3.11", str(venv)], check=True)
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "-q",
                "--compile-bytecode",
                "--python",
                str(venv / "bin" / "python"),
                package,
            ],
            check=True,
        )
    return exe


def count_records(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for line in f:
            if line.startswith((b'{"type":"RECORD"', b'{"type": "RECORD"')):
                n += 1
    return n


def measure(
    name: str, cmd: list[str], out: Path, rows: int, notes: str, env: dict[str, str] | None = None
) -> dict[str, t.Any]:
    env = {**os.environ, "LOGLEVEL": "WARNING", **(env or {})}
    with out.open("wb") as stdout:
        m = run_measured(cmd, stdout=stdout, env=env)
    if m.returncode != 0:
        raise RuntimeError(f"{name} exited {m.returncode}: {' '.join(cmd)}")
    got = count_records(out)
    out.unlink()
    if got != rows:
        raise RuntimeError(f"{name}: wrote {got} RECORD messages, expected {rows}")
    if "{cpu}" in notes:
        notes = notes.replace("{cpu}", f"{m.cpu_seconds:.1f}")
    return {
        "benchmark": "tap-braze-csv",
        "command": name,
        "rows": rows,
        "seconds": round(m.seconds, 2),
        "rows_per_s": round(rows / m.seconds),
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "notes": notes,
    }


def run(work: Path, scale: float = 1.0) -> list[dict]:
    """Run the benchmark; returns result rows (see benchmarks/run.py)."""
    from tap_braze_csv.sample import generate_export

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rows = max(1000, int(BASE_ROWS * scale))
    quarter = max(250, rows // 4)
    data = work / f"data_{rows}"
    small = work / f"data_{quarter}"
    zipped = work / f"zip_{rows}"
    export = data / "All Users-2024-05-01.csv"
    if not export.exists():
        shutil.rmtree(data, ignore_errors=True)
        generate_export(export, rows)
    if not (small / "All Users-2024-05-01.csv").exists():
        generate_export(small / "All Users-2024-05-01.csv", quarter)
    if not (zipped / "All Users-2024-05-01.zip").exists():
        generate_export(zipped / "All Users-2024-05-01.zip", rows)
    csv_folder = peer_venv(work, "tap-csv-folder")
    spreadsheets = peer_venv(work, "tap-spreadsheets")

    def config(name: str, body: dict) -> str:
        path = work / f"{name}.json"
        path.write_text(json.dumps(body))
        return str(path)

    out = work / "out.jsonl"
    tap = str(BIN / "tap-braze-csv")
    results = [
        measure(
            "plain csv.DictReader + json.dumps",
            [sys.executable, __file__, "--plain", str(export)],
            out,
            rows,
            "baseline: no typing, no state, no Singer SDK",
        ),
        measure(
            "tap-braze-csv",
            [tap, "--config", config("braze", {"paths": [str(data / "*.csv")]})],
            out,
            rows,
            "defaults: typed + unguarded, fast writer (compiled converters, orjson, buffered)",
        ),
        measure(
            "tap-braze-csv (fast_writer: false)",
            [
                tap,
                "--config",
                config("braze_sdk", {"paths": [str(data / "*.csv")], "fast_writer": False}),
            ],
            out,
            rows,
            "same records through the SDK's per-record path (conform, prune, one write per record)",
        ),
        measure(
            "tap-braze-csv (1/4 of the rows)",
            [tap, "--config", config("braze_small", {"paths": [str(small / "*.csv")]})],
            out,
            quarter,
            "memory is flat as the file grows: compare peak RSS with the full run",
        ),
        measure(
            "tap-braze-csv (.zip)",
            [tap, "--config", config("braze_zip", {"paths": [str(zipped / "*.zip")]})],
            out,
            rows,
            "the same export zipped, as Braze delivers it (streamed inflate)",
        ),
        measure(
            "tap-csv-folder (PyPI)",
            [
                str(csv_folder),
                "--config",
                config(
                    "csv_folder",
                    {"path": str(data), "read_mode": "merge", "stream_name": "braze_users"},
                ),
            ],
            out,
            rows,
            "peer: SDK tap, all strings",
        ),
        measure(
            "tap-spreadsheets (PyPI)",
            [
                str(spreadsheets),
                "--config",
                config(
                    "spreadsheets",
                    {
                        "files": [
                            {"path": str(export), "format": "csv", "table_name": "braze_users"}
                        ]
                    },
                ),
            ],
            out,
            rows,
            "peer: SDK tap, sampled type inference",
        ),
    ]
    results += json_path(work, scale, out, config)
    base = results[0]["rows_per_s"]
    for row in results:
        # Throughput relative to the plain loop, like every other benchmark (higher is better;
        # the issue asks for >= 0.5, i.e. within 2x the plain loop's time).
        row["ratio_to_baseline"] = round(row["rows_per_s"] / base, 2)
    return results


def start_braze_sandbox(seed_file: Path) -> tuple[subprocess.Popen, str]:
    """Start `braze-sandbox` (its own process: its memory is not the tap's); return it, URL."""
    import time

    cmd = [str(BIN / "braze-sandbox"), "--port", "0", "--api-key", BRAZE_KEY]
    cmd += ["--seed-file", str(seed_file), "--max-recorded-requests", "100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.rsplit(" ", 1)[-1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("braze-sandbox did not start")


def _admin(url: str, route: str, body: dict) -> None:
    import urllib.request

    req = urllib.request.Request(
        f"{url}/_sandbox/{route}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30):
        pass


def json_path(
    work: Path, scale: float, out: Path, config: t.Callable[[str, dict], str]
) -> list[dict]:
    """Rows for the REST export (JSON lines) path, beside the CSV rows."""
    from tap_braze_csv.sample import sample_profiles

    users = max(500, int(BASE_JSON_USERS * scale))
    seed = work / f"profiles_{users}.json"
    engagement = 0
    # Written one profile at a time: a benchmark process grown by a list of every profile would
    # inflate the tap's peak RSS (Linux children inherit the parent's high-water mark at fork).
    with seed.open("w") as fh:
        fh.write("[")
        for i, profile in enumerate(sample_profiles(users, seed=5)):
            engagement += len(profile["campaigns_received"]) + len(profile["canvases_received"])
            fh.write(("," if i else "") + json.dumps(profile))
        fh.write("]")
    sandbox, url = start_braze_sandbox(seed)
    tap = str(BIN / "tap-braze-csv")
    try:
        _admin(url, "segments", {"segment_id": "all-users"})
        _admin(url, "export_settings", {"delay": 0, "users_per_file": 5000})
        rest = {
            "api_key": BRAZE_KEY,
            "rest_endpoint": url,
            "segment_ids": ["all-users"],
            "poll_interval": 1,
        }
        users_fields = [
            "email", "first_name", "last_name", "phone", "country", "home_city", "language",
            "gender", "dob", "time_zone", "created_at", "custom_attributes",
        ]  # fmt: skip
        return [
            measure(
                "tap-braze-csv rest_export (JSON lines, users)",
                [
                    tap,
                    "--config",
                    config(
                        "braze_json", {"rest_export": {**rest, "fields_to_export": users_fields}}
                    ),
                ],
                out,
                users,
                f"{users:,} users: trigger + download ({users // 5000 or 1} files) + read; tap CPU "
                "{cpu} s, the rest of the wall time is the braze-sandbox process building and "
                "zipping the export; rows/s counts users",
            ),
            measure(
                "tap-braze-csv rest_export (JSON lines, users + braze_engagement)",
                [tap, "--config", config("braze_json_eng", {"rest_export": rest})],
                out,
                users + engagement,
                f"{users:,} users + {engagement:,} engagement records (the archive is read once "
                "per stream); tap CPU {cpu} s; rows/s counts all records",
            ),
        ]
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--plain")
    args = parser.parse_args()
    if args.plain:
        plain_main(args.plain)
        return
    rows = run(HERE / ".work" / "bench_tap_braze_csv", args.scale)
    from run import table  # the same markdown table `make bench` writes

    print(table(rows))


if __name__ == "__main__":
    main()
