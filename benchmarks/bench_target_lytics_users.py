"""Benchmark target-lytics-users: braze_users records/s into the Lytics sandbox, and peak RSS.

Side by side on the same generated Singer stream (200,000 `braze_users` records at scale 1):
- a minimal plain singer-sdk target (BatchSink, default validation, 5,000-record batches posted
  as JSON arrays to the same sandbox) - the baseline, defined in this file;
- target-lytics-users with its defaults (4 MB / 5,000-record bodies, 2 requests in flight);
- target-jsonl and meltanolabs-target-csv from PyPI (write local files; each installed in its own
  venv under .work/).

Each target runs in a fresh process; peak RSS is that process's own (os.wait4). The Lytics
sandbox is the `lytics-sandbox` CLI in its own process (a fresh one per run: it keeps what it
collects, and hosting it here would inflate the children's RSS through fork), and a run only
counts when the sandbox holds every record afterwards (`GET /_sandbox/stats`).
ratio_to_baseline = records/s / the plain SDK target's records/s (higher is better).

    python benchmarks/bench_target_lytics_users.py [--scale 1.0]
    python benchmarks/bench_target_lytics_users.py --plain-target --config CONFIG  (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from measure import run_measured  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-lytics-token"
BASE_ROWS = 200_000
BATCH_ROWS = 5000

SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        "braze_id": {"type": "string"},
        "external_id": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "first_name": {"type": ["string", "null"]},
        "last_name": {"type": ["string", "null"]},
        "phone_number": {"type": ["string", "null"]},
        "country": {"type": ["string", "null"]},
        "city": {"type": ["string", "null"]},
        "language": {"type": ["string", "null"]},
        "gender": {"type": ["string", "null"]},
        "date_of_birth": {"type": ["string", "null"], "format": "date"},
        "time_zone": {"type": ["string", "null"]},
        "first_session": {"type": ["string", "null"], "format": "date-time"},
        "last_session": {"type": ["string", "null"], "format": "date-time"},
        "session_count": {"type": ["integer", "null"]},
        "total_revenue": {"type": ["number", "null"]},
        "email_subscribe": {"type": ["string", "null"]},
        "push_subscribe": {"type": ["string", "null"]},
        "loyalty_tier": {"type": ["string", "null"]},
        "favorite_category": {"type": ["string", "null"]},
    },
}


# --- the SDK-default baseline target ---------------------------------------------------


def plain_target_main(config_path: str) -> None:
    """A minimal target written the way the SDK cookbook suggests (no tuning at all)."""
    import requests
    from singer_sdk import Target
    from singer_sdk import typing as th
    from singer_sdk.singerlib.json import serialize_json
    from singer_sdk.sinks import BatchSink

    class PlainSink(BatchSink):
        MAX_SIZE_DEFAULT = BATCH_ROWS

        def setup(self) -> None:
            self.session = requests.Session()
            self.session.headers["Authorization"] = self.config["api_token"]
            self.session.headers["Content-Type"] = "application/json"

        def process_batch(self, context: dict) -> None:
            body = serialize_json(context["records"]).encode()
            url = f"{self.config['api_url']}/collect/json/{self.config['stream']}"
            response = self.session.post(url, data=body, timeout=120)
            response.raise_for_status()

    class PlainTarget(Target):
        name = "plain-sdk-lytics-target"
        default_sink_class = PlainSink
        config_jsonschema = th.PropertiesList(
            th.Property("api_token", th.StringType, required=True, secret=True),
            th.Property("api_url", th.StringType, required=True),
            th.Property("stream", th.StringType, default="braze_users"),
        ).to_dict()

    PlainTarget.cli(["--config", config_path])


# --- input, peers, measurement ----------------------------------------------------------


def write_input(path: Path, rows: int) -> None:
    import orjson

    countries = ["FR", "US", "DE", "GB", "JP", "BR"]
    with path.open("wb") as fh:
        fh.write(
            orjson.dumps(
                {
                    "type": "SCHEMA",
                    "stream": "braze_users",
                    "schema": SCHEMA,
                    "key_properties": ["braze_id"],
                }
            )
            + b"\n"
        )
        for i in range(rows):
            rec = {
                "braze_id": f"5f{i:022x}",
                "external_id": f"user{i}",
                "email": f"user{i}@example.com",
                "first_name": "Ann" if i % 2 else "Zoë",
                "last_name": f"Lastname{i % 977}",
                "phone_number": f"+1555{i:07d}",
                "country": countries[i % len(countries)],
                "city": "Springfield",
                "language": "en",
                "gender": "F" if i % 3 else "M",
                "date_of_birth": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
                "time_zone": "America/New_York",
                "first_session": "2021-03-04T05:06:07Z",
                "last_session": f"2024-0{1 + i % 9}-15T10:20:30.123Z",
                "session_count": i % 500,
                "total_revenue": round((i % 1000) * 1.37, 2),
                "email_subscribe": "opted_in" if i % 4 else "subscribed",
                "push_subscribe": "subscribed",
                "loyalty_tier": ["gold", "silver", None][i % 3],
                "favorite_category": "shoes",
            }
            fh.write(orjson.dumps({"type": "RECORD", "stream": "braze_users", "record": rec}))
            fh.write(b"\n")
            if (i + 1) % 10_000 == 0:
                fh.write(orjson.dumps({"type": "STATE", "value": {"rows": i + 1}}) + b"\n")
        fh.write(orjson.dumps({"type": "STATE", "value": {"rows": rows, "done": True}}) + b"\n")


def peer_venv(work: Path, package: str, executable: str | None = None) -> Path:
    """Install a PyPI peer in its own venv under benchmarks/.work/ (never the workspace)."""
    venv = work.parent / "venvs" / package
    exe = venv / "bin" / (executable or package)
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


def start_sandbox() -> tuple[subprocess.Popen, str]:
    """Start `lytics-sandbox` in its own process; return it and its URL."""
    cmd = [str(BIN / "lytics-sandbox"), "--port", "0", "--api-token", TOKEN]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc, line.rsplit(" ", 1)[-1].strip()
    proc.kill()
    raise RuntimeError("lytics-sandbox did not start")


def collected_records(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=30) as resp:
        return int(json.load(resp)["collected_records"])


def measure(
    name: str,
    cmd: list[str],
    input_path: Path,
    rows: int,
    *,
    sandbox_check: t.Callable[[], int] | None,
    notes: str,
) -> dict[str, t.Any]:
    env = {**os.environ, "TARGET_LYTICS_USERS_LOGLEVEL": "WARNING", "LOGLEVEL": "WARNING"}
    with input_path.open("rb") as stdin:
        m = run_measured(cmd, stdin=stdin, stdout=subprocess.DEVNULL, env=env)
    if m.returncode != 0:
        raise RuntimeError(f"{name} exited {m.returncode}: {' '.join(cmd)}")
    if sandbox_check is not None:
        landed = sandbox_check()
        if landed != rows:
            raise RuntimeError(f"{name}: the sandbox holds {landed} records, expected {rows}")
    return {
        "benchmark": "target-lytics-users",
        "command": name,
        "rows": rows,
        "seconds": round(m.seconds, 2),
        "rows_per_s": round(rows / m.seconds),
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "notes": notes,
    }


def run(work: Path, scale: float = 1.0) -> list[dict]:
    """Run the benchmark; returns result rows (see benchmarks/run.py)."""
    work = Path(work) / "target_lytics_users"
    work.mkdir(parents=True, exist_ok=True)
    rows = max(1000, int(BASE_ROWS * scale))
    input_path = work / f"braze_users_{rows}.singer"
    if not input_path.exists():
        write_input(input_path, rows)
    jsonl_exe = peer_venv(work, "target-jsonl")

    def with_sandbox(name: str, cmd_for: t.Callable[[str], list[str]], notes: str) -> dict:
        sandbox, url = start_sandbox()
        try:
            config = work / f"{name.split()[0]}.json"
            config.write_text(json.dumps({"api_token": TOKEN, "api_url": url}))
            return measure(
                name,
                cmd_for(str(config)),
                input_path,
                rows,
                sandbox_check=lambda: collected_records(url),
                notes=notes,
            )
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=30)

    results = []
    plain = with_sandbox(
        "plain singer-sdk target (default validation)",
        lambda c: [sys.executable, __file__, "--plain-target", "--config", c],
        "baseline: BatchSink of 5,000 posting JSON arrays to the sandbox (ratio = records/s over this row's)",
    )
    results.append(plain)
    results.append(
        with_sandbox(
            "target-lytics-users",
            lambda c: [str(BIN / "target-lytics-users"), "--config", c],
            "defaults: 4 MB/5,000-record bodies, fastjsonschema + orjson, 2 in flight",
        )
    )
    out_dir = work / "jsonl_out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    jsonl_config = work / "target_jsonl.json"
    jsonl_config.write_text(
        json.dumps({"destination_path": str(out_dir), "do_timestamp_file": False})
    )
    results.append(
        measure(
            "target-jsonl (PyPI)",
            [str(jsonl_exe), "--config", str(jsonl_config)],
            input_path,
            rows,
            sandbox_check=None,
            notes="peer: writes a local JSONL file (no network)",
        )
    )
    csv_exe = peer_venv(work, "meltanolabs-target-csv", "target-csv")
    csv_dir = work / "csv_out"
    shutil.rmtree(csv_dir, ignore_errors=True)
    csv_dir.mkdir()
    csv_config = work / "target_csv.json"
    csv_config.write_text(json.dumps({"output_path": str(csv_dir)}))
    results.append(
        measure(
            "meltanolabs-target-csv (PyPI)",
            [str(csv_exe), "--config", str(csv_config)],
            input_path,
            rows,
            sandbox_check=None,
            notes="peer: SDK target writing a local CSV file (no network)",
        )
    )
    for row in results:
        row["ratio_to_baseline"] = round(row["rows_per_s"] / plain["rows_per_s"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--plain-target", action="store_true")
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.plain_target:
        plain_target_main(args.config)
        return
    rows = run(HERE / ".work", args.scale)
    from run import table  # the same markdown table `make bench` writes

    print(table(rows))


if __name__ == "__main__":
    main()
