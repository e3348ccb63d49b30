"""Console entry points ``braze-sandbox`` and ``lytics-sandbox``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from sandbox.braze import BrazeSandbox
from sandbox.lytics import LyticsSandbox
from sandbox.server import EmulatorServer

DEFAULT_BRAZE_PORT = 8790
DEFAULT_LYTICS_PORT = 8791


def _common(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=default_port, help=f"port, 0 = any free port ({default_port})"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="max requests per window; beyond -> 429 (unlimited)",
    )
    parser.add_argument(
        "--rate-limit-window", type=float, default=1.0, help="rate-limit window in seconds (1.0)"
    )
    parser.add_argument(
        "--seed-file", type=Path, default=None, help="JSON file with initial state (see README)"
    )
    parser.add_argument(
        "--max-recorded-requests",
        type=int,
        default=10_000,
        help="requests kept for GET /_sandbox/requests, oldest dropped; 0 = record none (10000)",
    )


def _load_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SystemExit(f"--seed-file {path}: cannot read JSON: {exc}") from exc


def _configure(server: EmulatorServer, args: argparse.Namespace) -> None:
    server.rate_limit = args.rate_limit
    server.rate_limit_window = args.rate_limit_window
    server.record_requests = args.max_recorded_requests > 0
    server.max_recorded_requests = args.max_recorded_requests or None


def _run(server: EmulatorServer, label: str) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        server.start()
    except OSError as exc:
        print(f"{label}: cannot listen on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 1
    print(f"{label} listening on {server.url}", flush=True)
    print(f"{label}: admin routes under {server.url}/_sandbox/ ; Ctrl-C to stop", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    stats = server.stats_snapshot()
    print(f"{label} stopped; stats: {orjson.dumps(stats).decode()}", flush=True)
    return 0


def braze_parser() -> argparse.ArgumentParser:
    """Arguments of ``braze-sandbox``."""
    p = argparse.ArgumentParser(
        prog="braze-sandbox",
        description="Local emulator of Braze POST /users/track (no data points spent).",
    )
    _common(p, DEFAULT_BRAZE_PORT)
    p.add_argument(
        "--api-key", default="sandbox-braze-key", help="REST API key expected as Bearer token"
    )
    p.add_argument(
        "--max-array-length",
        type=int,
        default=500,
        help="array attribute cap, oldest dropped (500; Braze's older docs say 25/100)",
    )
    p.add_argument(
        "--max-objects", type=int, default=75, help="max objects per array per request (75)"
    )
    p.add_argument(
        "--max-objects-status",
        type=int,
        default=400,
        choices=[400, 413],
        help="status of a request over --max-objects (400 'Max Input Length Exceeded')",
    )
    return p


def lytics_parser() -> argparse.ArgumentParser:
    """Arguments of ``lytics-sandbox``."""
    p = argparse.ArgumentParser(
        prog="lytics-sandbox",
        description="Local emulator of the Lytics segment, scan and collect APIs.",
    )
    _common(p, DEFAULT_LYTICS_PORT)
    p.add_argument(
        "--api-token", default="sandbox-lytics-token", help="raw token expected in Authorization"
    )
    p.add_argument(
        "--cursor-key",
        choices=["_next", "next"],
        default="_next",
        help="scan response key holding the cursor (_next as in go-lytics; the doc text says next)",
    )
    p.add_argument(
        "--cursor-ttl", type=float, default=300.0, help="seconds a scan cursor stays valid (300)"
    )
    p.add_argument(
        "--max-collect-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="largest /collect/json body; beyond -> 413 (10 MiB)",
    )
    p.add_argument(
        "--max-record-bytes",
        type=int,
        default=16 * 1024,
        help="largest record within a /collect/json batch; larger ones are rejected "
        "(16 KiB; 0 disables)",
    )
    p.add_argument(
        "--scan-page-delay",
        type=float,
        default=0.0,
        help="seconds each scan answer is held back, to emulate network latency in benchmarks (0)",
    )
    return p


def seed_braze(server: BrazeSandbox, data: Any) -> int:
    """Load users from ``{"users": {external_id: {...}}}`` or ``[{"external_id": ...}, ...]``."""
    users = data.get("users", data) if isinstance(data, dict) else data
    count = 0
    if isinstance(users, dict):
        for ext, attrs in users.items():
            server.add_user(str(ext), **(attrs or {}))
            count += 1
    elif isinstance(users, list):
        for attrs in users:
            attrs = dict(attrs)
            server.add_user(str(attrs.pop("external_id")), **attrs)
            count += 1
    else:
        raise SystemExit("--seed-file: expected {'users': {...}} or a list of users")
    return count


def seed_lytics(server: LyticsSandbox, data: Any) -> int:
    """Load audiences from ``{"audiences": [...]}`` or a list of audience specs."""
    audiences = data.get("audiences", data) if isinstance(data, dict) else data
    if not isinstance(audiences, list):
        raise SystemExit("--seed-file: expected {'audiences': [...]} or a list of audiences")
    for i, spec in enumerate(audiences):
        if not isinstance(spec, dict) or "slug" not in spec:
            raise SystemExit(f"--seed-file: audience #{i} needs a 'slug'")
        server.load_audience(spec)
    return len(audiences)


def braze_main(argv: Sequence[str] | None = None) -> None:
    """Run the Braze emulator until SIGINT/SIGTERM."""
    args = braze_parser().parse_args(argv)
    server = BrazeSandbox(
        api_key=args.api_key,
        max_array_length=args.max_array_length,
        max_objects=args.max_objects,
        max_objects_status=args.max_objects_status,
        host=args.host,
        port=args.port,
    )
    _configure(server, args)
    if args.seed_file:
        n = seed_braze(server, _load_json(args.seed_file))
        print(f"braze-sandbox: seeded {n} users from {args.seed_file}", flush=True)
    raise SystemExit(_run(server, "braze-sandbox"))


def lytics_main(argv: Sequence[str] | None = None) -> None:
    """Run the Lytics emulator until SIGINT/SIGTERM."""
    args = lytics_parser().parse_args(argv)
    server = LyticsSandbox(
        api_token=args.api_token,
        cursor_key=args.cursor_key,
        cursor_ttl=args.cursor_ttl,
        max_collect_bytes=args.max_collect_bytes,
        max_record_bytes=args.max_record_bytes or None,
        scan_page_delay=args.scan_page_delay,
        host=args.host,
        port=args.port,
    )
    _configure(server, args)
    if args.seed_file:
        n = seed_lytics(server, _load_json(args.seed_file))
        print(f"lytics-sandbox: seeded {n} audiences from {args.seed_file}", flush=True)
    raise SystemExit(_run(server, "lytics-sandbox"))
