"""Scale benchmark of target-braze-audience's membership store: SQLite vs PostgreSQL.

For each store backend and size (memberships = users x 3 audiences):

1. baseline run: the first snapshot recorded silently (``backfill_existing_users: false``), which
   fills the store without sending anything;
2. unchanged run: the same members again (new scan ids): the steady state of most runs; every
   membership goes through the store and nothing is sent.

Reported: wall seconds, seconds per million memberships and peak RSS of the target process.
PostgreSQL is a throwaway local server started here (``initdb``/``pg_ctl`` as in the tests,
fsync off) unless ``--pg-url`` names one.

    uv run python benchmarks/bench_scale.py                      # 300,000 memberships
    uv run python benchmarks/bench_scale.py --memberships 3000000
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import typing as t
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_target_braze_audience import AUDIENCES, write_input  # noqa: E402
from measure import run_measured  # noqa: E402

BIN = Path(sys.executable).parent


def _pg_bin(name: str) -> str:
    found = (
        shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [""])[-1]
    )
    if not found:
        raise SystemExit(f"{name} not found: install PostgreSQL or pass --pg-url")
    return found


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (fsync off), as the test suite starts it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(tmp, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    data = tmp / "data"
    subprocess.run(
        [*prefix, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    pg_ctl = _pg_bin("pg_ctl")
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


def _run_target(config: dict[str, t.Any], inp: Path, work: Path) -> tuple[float, float]:
    cfg = work / "config.json"
    cfg.write_text(json.dumps(config))
    with inp.open("rb") as stdin:
        res = run_measured(
            [str(BIN / "target-braze-audience"), "--config", str(cfg)],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            cwd=str(work),
        )
    if res.returncode:
        raise RuntimeError(f"target-braze-audience exited {res.returncode}")
    return res.seconds, res.peak_rss_mb


def bench_store(
    store_url: str, backend: str, memberships: int, work: Path
) -> list[dict[str, t.Any]]:
    """Baseline and unchanged run on one store; returns one row per run."""
    users = max(memberships // len(AUDIENCES), 1)
    config = {
        "api_key": "bench-key",
        "rest_endpoint": "http://127.0.0.1:9",  # nothing is sent in these two runs
        "store_url": store_url,
        "backfill_existing_users": False,
    }
    rows = []
    for run, scan in (("baseline", "s1"), ("unchanged", "s2")):
        inp = work / f"in-{scan}.jsonl"
        n = write_input(inp, {a: range(users) for a in AUDIENCES}, scan)
        secs, rss = _run_target(config, inp, work)
        inp.unlink()
        rows.append(
            {
                "benchmark": "scale_store",
                "store": backend,
                "run": run,
                "memberships": n,
                "seconds": round(secs, 1),
                "seconds_per_million": round(secs / n * 1e6, 1),
                "peak_rss_mb": round(rss),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _reset_pg(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for table in (
            "braze_membership",
            "braze_pending",
            "braze_audience",
            "braze_store_meta",
            "braze_member_uid",
            "braze_update_only",
        ):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()


def main() -> None:
    """Run the scale benchmark and print one JSON line per run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--memberships", type=int, nargs="+", default=[300_000])
    ap.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--pg-url", help="an existing PostgreSQL (its braze_* tables are dropped)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pg = None
        if "postgresql" in args.stores:
            pg = args.pg_url or stack.enter_context(local_postgres())
        for n in args.memberships:
            for backend in args.stores:
                if backend == "sqlite":
                    url = str(work / f"store-{n}.sqlite")
                else:
                    assert pg is not None
                    _reset_pg(pg)
                    url = pg
                bench_store(url, backend, n, work)


if __name__ == "__main__":
    main()
