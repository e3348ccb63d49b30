"""Scale benchmark of target-braze-audience: store, delivery and concurrent runners at size.

Memberships are users x audiences (`--audiences`, 4 by default: 10,000,000 = 2,500,000 users x
4). The input is a tap-lytics-audience-shaped Singer file written before each run (not timed);
each run is one fresh `target-braze-audience` process (or several, `concurrent`), measured with
`os.wait4`: wall seconds, CPU seconds and peak RSS of that process. Series (`--series`):

``store``
    1. baseline: the first snapshot recorded silently (``backfill_existing_users: false``): fills
       the store, sends nothing; 2. unchanged: the same members again (new scan ids).
``dry``
    baseline as above, then ``dry_run: true``: 2. unchanged, 3. 1 % churn (0.5 % of each
    audience's members leave, as many new users join). Nothing is sent, the store is not
    changed by the dry runs; requests and data points are what the run says it would send.
``sandbox``
    delivering into a Braze sandbox (in this process, unlimited, `rate_limit_per_second: 0`,
    8 in flight): 1. backfill (every membership sent), 2. unchanged, 3. 1 % churn. After each
    run every user's array attribute is read back from the sandbox and compared with the
    expected membership: the benchmark fails (exit 1) when one value differs.
``concurrent``
    1, 2 and 4 runners (`--runners`) started at the same moment on disjoint audience partitions
    (runner j gets the audiences k with k % N == j), sharing one PostgreSQL store, delivering
    into the sandbox with a generous rate limit (3,000 requests per 3 s; each runner's
    `rate_limit_per_second` is its share of 1,000/s): backfill, then 1 % churn. Reported:
    aggregate memberships/s (all memberships over the wall time from the first start to the
    last exit) and the exact final Braze state (checked as above; fails loudly otherwise).
``writemode``
    the sandbox series' backfill and churn runs with `array_write_mode: delta` and
    `set_when_cheaper`: data points sent by each (`--write-modes`).

PostgreSQL is a throwaway local server started here (``initdb``/``pg_ctl`` as in the tests,
fsync off) unless ``--pg-url`` names one (its ``braze_*`` tables are dropped).

    uv run python benchmarks/bench_scale.py                      # store series, 300,000
    uv run python benchmarks/bench_scale.py --series dry sandbox --memberships 300000 3000000
    uv run python benchmarks/bench_scale.py --series concurrent --runners 1 2 4
    make bench-scale                                             # the issue's table (long)
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_target_braze_audience import MEMBER_SCHEMA, SNAPSHOT_SCHEMA  # noqa: E402
from measure import Measured, run_measured  # noqa: E402

BIN = Path(sys.executable).parent
API_KEY = "bench-key"
ATTRIBUTE = "lytics_segments"
SERIES = ("store", "dry", "sandbox", "concurrent", "writemode")
JSON_OUT: Path | None = None  # --json: every row is appended here as it is measured


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


def _reset_pg(url: str) -> None:
    """Drop every braze_* table (whatever the store version created)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        names = conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND left(tablename, 5) = 'braze'"
        ).scalars()
        for name in list(names):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    engine.dispose()


# --- membership model ------------------------------------------------------------------


class Population:
    """`users` x `audiences` memberships and the 1 % churn of them.

    Churn of audience k: users i with (i + k) % 200 == 0 leave it (0.5 %), and
    `joiners` new users (user{users + k * joiners + j}) join it (0.5 %).
    """

    def __init__(self, users: int, audiences: int) -> None:
        self.users = users
        self.audiences = [f"aud_{k}" for k in range(audiences)]
        self.joiners = max(1, users // 200)

    def members(self, k: int, run: str) -> Iterator[int]:
        """User numbers in audience k in run `base` or `churn`."""
        if run == "base":
            yield from range(self.users)
            return
        for i in range(self.users):
            if (i + k) % 200:
                yield i
        start = self.users + k * self.joiners
        yield from range(start, start + self.joiners)

    def expected(self, i: int, run: str) -> set[str]:
        """Audiences user i belongs to in `run`."""
        if i >= self.users:
            if run == "base":
                return set()
            return {self.audiences[(i - self.users) // self.joiners]}
        if run == "base":
            return set(self.audiences)
        return {a for k, a in enumerate(self.audiences) if (i + k) % 200}

    def user_range(self, run: str) -> range:
        """Every user number that appears in `run` or before it."""
        extra = 0 if run == "base" else self.joiners * len(self.audiences)
        return range(self.users + extra)

    def changed(self, run: str, previous: str | None) -> tuple[int, int]:
        """(users whose membership changes, memberships that change) from previous to run."""
        if previous is None:
            n = sum(1 for _ in self.user_range(run))
            return n, sum(len(self.expected(i, run)) for i in self.user_range(run))
        if previous == run:
            return 0, 0
        leavers = sum(1 for i in range(self.users) if len(self.expected(i, "churn")) < 4)
        n_aud = len(self.audiences)
        leave = sum(n_aud - len(self.expected(i, "churn")) for i in range(self.users))
        join = self.joiners * n_aud
        return leavers + join, leave + join


_REC = (
    '{"type":"RECORD","stream":"audience_members","record":{"audience_id":"id-%s",'
    '"audience_slug":"%s","external_id":"user%d","lytics_uid":"lu%d","scan_id":"%s",'
    '"email":"user%d@example.com"}}\n'
)


def write_input(path: Path, pop: Population, run: str, scan: str, ks: list[int]) -> int:
    """Write the Singer stream of audiences `ks` in `run`; returns membership records."""
    n = 0
    with path.open("w") as f:
        for stream, schema in (
            ("audience_members", MEMBER_SCHEMA),
            ("audience_snapshots", SNAPSHOT_SCHEMA),
        ):
            msg = {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": []}
            f.write(json.dumps(msg) + "\n")
        for k in ks:
            aud = pop.audiences[k]
            sid = f"{scan}-{aud}"
            count = 0
            chunk: list[str] = []
            for i in pop.members(k, run):
                chunk.append(_REC % (aud, aud, i, i, sid, i))
                if len(chunk) >= 10_000:
                    f.write("".join(chunk))
                    count += len(chunk)
                    chunk = []
            f.write("".join(chunk))
            count += len(chunk)
            snap = {
                "audience_id": f"id-{aud}",
                "audience_slug": aud,
                "scan_id": sid,
                "member_count": count,
                "members_without_id": 0,
                "started_at": "2024-01-01T00:00:00Z",
                "completed_at": "2024-01-01T00:10:00Z",
            }
            msg = {"type": "RECORD", "stream": "audience_snapshots", "record": snap}
            f.write(json.dumps(msg) + "\n")
            n += count
        f.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"scan": scan}}}) + "\n")
    return n


def check_state(braze: t.Any, pop: Population, run: str) -> int:
    """Compare every user's array attribute with the expected membership; returns users checked.

    Raises SystemExit naming the first differences: a benchmark of wrong output is worthless.
    """
    wrong: list[str] = []
    n = 0
    for i in pop.user_range(run):
        user = braze.user(f"user{i}")
        got = set((user or {}).get(ATTRIBUTE) or [])
        want = pop.expected(i, run)
        n += 1
        if got != want:
            wrong.append(f"user{i}: Braze has {sorted(got)}, expected {sorted(want)}")
            if len(wrong) >= 5:
                break
    if braze.user_count() != n:
        wrong.append(f"Braze holds {braze.user_count():,} users, expected {n:,}")
    if wrong:
        raise SystemExit("Braze state is NOT exact after the run:\n  " + "\n  ".join(wrong))
    return n


# --- running the target ----------------------------------------------------------------

_REQUESTS = re.compile(r"Summary(?: \(dry run\))?: .*?requests(?: would be)?=(\d+)")
_POINTS = re.compile(r"Summary(?: \(dry run\))?: .*?data points\)?=(\d+)")


def _summary(log: Path) -> tuple[int | None, int | None]:
    """(requests, data points) from the target's own summary line."""
    text = log.read_text(errors="replace")
    req, pts = _REQUESTS.findall(text), _POINTS.findall(text)
    return (int(req[-1]) if req else None, int(pts[-1]) if pts else None)


def _config(work: Path, name: str, config: dict[str, t.Any]) -> Path:
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def run_target(cfg: Path, inp: Path, log: Path, work: Path) -> Measured:
    """One target process on `inp`; raises when it fails (its log is kept)."""
    with inp.open("rb") as stdin, log.open("wb") as err:
        res = run_measured(
            [str(BIN / "target-braze-audience"), "--config", str(cfg)],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=str(work),
        )
    if res.returncode:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"target-braze-audience exited {res.returncode}: {tail}")
    return res


def _row(**fields: t.Any) -> dict[str, t.Any]:
    row = {"benchmark": "scale", "load_1m": round(os.getloadavg()[0], 1), **fields}
    print(json.dumps(row), flush=True)
    if JSON_OUT is not None:
        with JSON_OUT.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


def _measure_row(
    series: str, backend: str, run: str, n: int, m: Measured, log: Path, **extra: t.Any
) -> dict[str, t.Any]:
    req, pts = _summary(log)
    return _row(
        series=series,
        store=backend,
        run=run,
        memberships=n,
        seconds=round(m.seconds, 1),
        records_per_s=round(n / m.seconds),
        seconds_per_million=round(m.seconds / n * 1e6, 1),
        cpu_s=round(m.cpu_seconds, 1),
        peak_rss_mb=round(m.peak_rss_mb),
        requests=req,
        data_points=pts,
        **extra,
    )


def bench_store(
    store_url: str, backend: str, memberships: int, work: Path, audiences: int
) -> list[dict[str, t.Any]]:
    """`store` series: silent baseline and unchanged run."""
    pop = Population(max(memberships // audiences, 1), audiences)
    ks = list(range(audiences))
    config = {
        "api_key": API_KEY,
        "rest_endpoint": "http://127.0.0.1:9",  # nothing is sent in these runs
        "store_url": store_url,
        "backfill_existing_users": False,
    }
    cfg = _config(work, "store", config)
    rows = []
    for run, scan in (("baseline", "s1"), ("unchanged", "s2")):
        inp = work / "in.jsonl"
        n = write_input(inp, pop, "base", scan, ks)
        m = run_target(cfg, inp, work / f"log-{run}.txt", work)
        inp.unlink()
        rows.append(_measure_row("store", backend, run, n, m, work / f"log-{run}.txt"))
    return rows


def bench_dry(
    store_url: str, backend: str, memberships: int, work: Path, audiences: int
) -> list[dict[str, t.Any]]:
    """`dry` series: silent baseline, then unchanged and 1 % churn as dry runs."""
    pop = Population(max(memberships // audiences, 1), audiences)
    ks = list(range(audiences))
    base = {"api_key": API_KEY, "rest_endpoint": "http://127.0.0.1:9", "store_url": store_url}
    rows = []
    for run, members, scan, extra in (
        ("baseline (silent)", "base", "s1", {"backfill_existing_users": False}),
        ("unchanged (dry_run)", "base", "s2", {"dry_run": True}),
        ("1% churn (dry_run)", "churn", "s3", {"dry_run": True}),
    ):
        cfg = _config(work, "dry", {**base, **extra})
        inp = work / "in.jsonl"
        n = write_input(inp, pop, members, scan, ks)
        log = work / "log-dry.txt"
        m = run_target(cfg, inp, log, work)
        inp.unlink()
        rows.append(_measure_row("dry", backend, run, n, m, log))
    return rows


def _sandbox(**limits: t.Any) -> t.Any:
    from sandbox import BrazeSandbox

    braze = BrazeSandbox(api_key=API_KEY, max_array_length=500)
    braze.record_requests = False  # millions of requests: keep only the counters
    for k, v in limits.items():
        setattr(braze, k, v)
    return braze


def bench_sandbox(
    store_url: str,
    backend: str,
    memberships: int,
    work: Path,
    audiences: int,
    write_mode: str | None = None,
    runs: tuple[str, ...] = ("backfill", "unchanged", "1% churn"),
) -> list[dict[str, t.Any]]:
    """`sandbox` series: backfill, unchanged and 1 % churn delivered; state checked each time."""
    pop = Population(max(memberships // audiences, 1), audiences)
    ks = list(range(audiences))
    rows = []
    with _sandbox() as braze:
        config: dict[str, t.Any] = {
            "api_key": API_KEY,
            "rest_endpoint": braze.url,
            "store_url": store_url,
            "rate_limit_per_second": 0,
            "max_concurrency": 8,
            "max_array_length": 500,
        }
        if write_mode is not None:
            config["array_write_mode"] = write_mode
        cfg = _config(work, "sandbox", config)
        previous: str | None = None
        plan = {
            "backfill": ("base", "s1"),
            "unchanged": ("base", "s2"),
            "1% churn": ("churn", "s3"),
        }
        for run in runs:
            members, scan = plan[run]
            inp = work / "in.jsonl"
            n = write_input(inp, pop, members, scan, ks)
            log = work / "log-sandbox.txt"
            before = braze.stats_snapshot()
            m = run_target(cfg, inp, log, work)
            inp.unlink()
            after = braze.stats_snapshot()
            users, changed = pop.changed(members, previous)
            checked = check_state(braze, pop, members)
            previous = members
            rows.append(
                _measure_row(
                    "sandbox" if write_mode is None else f"writemode {write_mode}",
                    backend,
                    run,
                    n,
                    m,
                    log,
                    sandbox_requests=after["requests"] - before["requests"],
                    sandbox_data_points=after["data_points"] - before["data_points"],
                    min_requests=math.ceil(users / 75),
                    memberships_changed=changed,
                    state=f"exact ({checked:,} users)",
                )
            )
    return rows


def bench_concurrent(
    pg_url: str, memberships: int, work: Path, audiences: int, runners: list[int]
) -> list[dict[str, t.Any]]:
    """`concurrent` series: N runners on disjoint audiences of one PostgreSQL store."""
    pop = Population(max(memberships // audiences, 1), audiences)
    rows = []
    for n_run in runners:
        _reset_pg(pg_url)
        with _sandbox(rate_limit=3000, rate_limit_window=3.0) as braze:
            previous: str | None = None
            for run, members, scan in (("backfill", "base", "s1"), ("1% churn", "churn", "s2")):
                procs = []
                total = 0
                parts = [[k for k in range(audiences) if k % n_run == j] for j in range(n_run)]
                for j, ks in enumerate(parts):
                    inp = work / f"in-{j}.jsonl"
                    total += write_input(inp, pop, members, scan, ks)
                    config = {
                        "api_key": API_KEY,
                        "rest_endpoint": braze.url,
                        "store_url": pg_url,
                        "rate_limit_per_second": 1000 / n_run,
                        "max_concurrency": 8,
                        "max_array_length": 500,
                    }
                    procs.append((j, inp, _config(work, f"runner-{j}", config)))
                before = braze.stats_snapshot()
                started = time.perf_counter()
                running = []
                for j, inp, cfg in procs:
                    log = (work / f"log-runner-{j}.txt").open("wb")
                    stdin = inp.open("rb")
                    proc = subprocess.Popen(
                        [str(BIN / "target-braze-audience"), "--config", str(cfg)],
                        stdin=stdin,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        cwd=str(work),
                    )
                    running.append((j, proc, stdin, log))
                results = []
                by_pid = {proc.pid: (j, proc, stdin, log) for j, proc, stdin, log in running}
                while by_pid:  # in the order they exit, so each runner's own time is right
                    pid, status, usage = os.wait4(-1, 0)
                    if pid not in by_pid:
                        continue
                    j, proc, stdin, log = by_pid.pop(pid)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    stdin.close()
                    log.close()
                    if proc.returncode:
                        tail = (work / f"log-runner-{j}.txt").read_text().splitlines()[-5:]
                        raise SystemExit(f"runner {j} of {n_run} exited {proc.returncode}: {tail}")
                    results.append(
                        Measured(
                            proc.returncode,
                            time.perf_counter() - started,
                            usage.ru_maxrss / 1024,
                            usage.ru_utime + usage.ru_stime,
                        )
                    )
                wall = time.perf_counter() - started
                after = braze.stats_snapshot()
                users, changed = pop.changed(members, previous)
                checked = check_state(braze, pop, members)
                previous = members
                for _, inp, _ in procs:
                    inp.unlink()
                rows.append(
                    _row(
                        series="concurrent",
                        store="postgresql",
                        run=f"{run}, {n_run} runner{'s' if n_run > 1 else ''}",
                        memberships=total,
                        seconds=round(wall, 1),
                        records_per_s=round(total / wall),
                        seconds_per_million=round(wall / total * 1e6, 1),
                        cpu_s=round(sum(r.cpu_seconds for r in results), 1),
                        peak_rss_mb=round(max(r.peak_rss_mb for r in results)),
                        runner_seconds=[round(r.seconds, 1) for r in results],
                        sandbox_requests=after["requests"] - before["requests"],
                        sandbox_data_points=after["data_points"] - before["data_points"],
                        rate_limited=after["rate_limited"] - before["rate_limited"],
                        memberships_changed=changed,
                        min_requests=math.ceil(users / 75),
                        state=f"exact ({checked:,} users)",
                    )
                )
    return rows


def markdown(rows: list[dict[str, t.Any]]) -> str:
    """The rows as a markdown table."""
    cols = [
        ("store", "store"),
        ("series", "series"),
        ("run", "run"),
        ("memberships", "memberships"),
        ("seconds", "seconds"),
        ("records_per_s", "records/s"),
        ("seconds_per_million", "s per million"),
        ("cpu_s", "CPU s"),
        ("peak_rss_mb", "peak RSS MB"),
        ("requests", "requests (target)"),
        ("data_points", "data points (target)"),
        ("sandbox_data_points", "data points (sandbox)"),
        ("state", "Braze state"),
        ("load_1m", "load"),
    ]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            cells.append("" if v is None else f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the chosen series and print one JSON line per run, then a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--series", nargs="+", default=["store"], choices=SERIES)
    ap.add_argument("--memberships", type=int, nargs="+", default=[300_000])
    ap.add_argument("--audiences", type=int, default=4, help="audiences per membership set (4)")
    ap.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--write-modes", nargs="+", default=["delta", "set_when_cheaper"])
    ap.add_argument("--pg-url", help="an existing PostgreSQL (its braze_* tables are dropped)")
    ap.add_argument("--json", type=Path, help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the throwaway PostgreSQL server and files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    global JSON_OUT
    JSON_OUT = args.json
    os.environ.setdefault("TARGET_BRAZE_AUDIENCE_LOG_LEVEL", "INFO")
    rows: list[dict[str, t.Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pg = None
        if "postgresql" in args.stores or "concurrent" in args.series:
            pg = args.pg_url or stack.enter_context(local_postgres())
        for n in args.memberships:
            for series in args.series:
                if series == "concurrent":
                    assert pg is not None
                    rows += bench_concurrent(pg, n, work, args.audiences, args.runners)
                    continue
                for backend in args.stores:
                    modes = args.write_modes if series == "writemode" else [None]
                    for mode in modes:
                        if backend == "sqlite":
                            url = str(work / f"store-{series}-{n}-{mode}.sqlite")
                        else:
                            assert pg is not None
                            _reset_pg(pg)
                            url = pg
                        if series == "store":
                            rows += bench_store(url, backend, n, work, args.audiences)
                        elif series == "dry":
                            rows += bench_dry(url, backend, n, work, args.audiences)
                        elif series == "sandbox":
                            rows += bench_sandbox(url, backend, n, work, args.audiences)
                        else:
                            rows += bench_sandbox(
                                url,
                                backend,
                                n,
                                work,
                                args.audiences,
                                write_mode=mode,
                                runs=("backfill", "1% churn"),
                            )
                        if backend == "sqlite":
                            for f in work.glob("store-*.sqlite*"):
                                f.unlink()
    print(markdown(rows))


if __name__ == "__main__":
    main()
