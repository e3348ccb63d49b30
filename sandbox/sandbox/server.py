"""EmulatorServer: the HTTP plumbing shared by the Braze and Lytics emulators.

Stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with Content-Length on every response
(so client keep-alive works), request recording, fault injection, fixed-window rate
limiting and admin routes under ``/_sandbox/``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

ADMIN_PREFIX = "/_sandbox/"
_REDACTED_HEADERS = frozenset({"authorization", "x-api-key", "cookie"})

# (status, body, extra headers)
Response = tuple[int, bytes, dict[str, str]]

_MISSING = object()


_Server = TypeVar("_Server", bound="EmulatorServer")


@dataclass
class RecordedRequest:
    """One request the emulator received (admin routes are not recorded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    time: float = field(default_factory=time.time)
    _json: Any = field(default=_MISSING, repr=False, compare=False)

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if self._json is _MISSING:
            try:
                self._json = orjson.loads(self.body) if self.body else None
            except orjson.JSONDecodeError:
                self._json = None
        return self._json

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view with secrets redacted (for the admin route)."""
        headers = {
            k: ("<redacted>" if k in _REDACTED_HEADERS else v) for k, v in self.headers.items()
        }
        body_json = self.json
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "status": self.status,
            "time": self.time,
            "json": body_json,
            "body": None if body_json is not None else self.body.decode("utf-8", "replace"),
        }


def dumps(obj: Any) -> bytes:
    """Serialise to JSON bytes (orjson, non-str dict keys allowed)."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    """Build a JSON response tuple."""
    return status, dumps(obj), dict(headers or {})


class _Fault:
    __slots__ = ("path_prefix", "remaining", "status")

    def __init__(self, remaining: int, status: int, path_prefix: str) -> None:
        self.remaining = remaining
        self.status = status
        self.path_prefix = path_prefix


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive clients must not block stop()
    allow_reuse_address = True
    request_queue_size = 128
    emulator: EmulatorServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    # One write per response and TCP_NODELAY: the stdlib default writes headers and
    # body separately, which with Nagle and delayed ACKs costs ~40 ms per keep-alive request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def handle_one_request(self) -> None:
        """Read one request, dispatch it, write the response in one buffered write.

        Replaces BaseHTTPRequestHandler's parser: it builds an ``email.message`` for the
        headers and formats a Date per response, which dominated the per-request cost.
        """
        try:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line:
                self.close_connection = True
                return
            if len(line) > _MAX_LINE:
                self._simple_error(414, "request line too long")
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                self._simple_error(400, "bad request line")
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for _ in range(_MAX_HEADERS + 1):
                raw = self.rfile.readline(_MAX_LINE + 1)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            else:
                self._simple_error(431, "too many headers")
                return
            connection = headers.get("connection", "").lower()
            if version == "HTTP/1.0":
                self.close_connection = connection != "keep-alive"
            else:
                self.close_connection = connection == "close"
            if headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            body = self._read_body(headers)
        except (TimeoutError, ConnectionError, ValueError):
            self.close_connection = True
            return
        self.command, self.path, self.request_version = method, target, version
        path, _, qs = target.partition("?")
        query = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
        try:
            status, payload, extra = self.server.emulator.dispatch(
                method, path, query, headers, body
            )
        except Exception as exc:  # an emulator bug must still answer the client
            status, payload, extra = json_response(
                500, {"message": f"sandbox internal error: {type(exc).__name__}"}
            )
        self._write(status, payload, extra, head=method == "HEAD")

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(_MAX_LINE + 1)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(_MAX_LINE + 1)
            return b"".join(chunks)
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _simple_error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._write(status, dumps({"message": message}), {}, head=False)

    def _write(self, status: int, payload: bytes, extra: dict[str, str], *, head: bool) -> None:
        reason = _REASONS.get(status, "")
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Server: sandbox/0.1",
            f"Content-Type: {extra.pop('Content-Type', 'application/json')}",
            f"Content-Length: {len(payload)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in extra.items())
        if self.close_connection:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head_bytes if head else head_bytes + payload)
            self.wfile.flush()
        except (ConnectionError, TimeoutError):
            self.close_connection = True


_MAX_LINE = 65536
_MAX_HEADERS = 100
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class EmulatorServer:
    """Base class: lifecycle, recording, fault injection, rate limiting, admin routes.

    Subclasses implement :meth:`authenticate`, :meth:`route` and the error body shape.
    """

    name = "sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self.record_requests = True
        self.max_recorded_requests: int | None = None
        self.rate_limit: int | None = None
        self.rate_limit_window: float = 1.0
        self.stats: dict[str, int] = {"requests": 0, "rate_limited": 0, "faults": 0}
        self._faults: list[_Fault] = []
        self._window_start = 0.0
        self._window_count = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._admin_routes: dict[tuple[str, str], Callable[[RecordedRequest], Response]] = {
            ("GET", "stats"): lambda r: json_response(200, self.stats_snapshot()),
            ("GET", "requests"): lambda r: json_response(
                200, [x.to_dict() for x in self.requests_snapshot()]
            ),
            ("POST", "clear_requests"): self._admin_clear_requests,
            ("POST", "fail_next"): self._admin_fail_next,
            ("POST", "rate_limit"): self._admin_rate_limit,
            ("GET", "health"): lambda r: json_response(200, {"status": "ok", "name": self.name}),
        }

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._httpd.server_address[1]}"

    def start(self) -> EmulatorServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.emulator = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name=self.name
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self.lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called from another thread (used by the CLI)."""
        self.start()
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.2)

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---- controls --------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, path_prefix: str = "") -> None:
        """Answer the next ``n`` requests whose path starts with ``path_prefix`` with ``status``."""
        if n <= 0:
            return
        with self.lock:
            self._faults.append(_Fault(int(n), int(status), path_prefix))

    def clear_faults(self) -> None:
        """Forget pending injected faults."""
        with self.lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        with self.lock:
            self.requests.clear()

    def requests_snapshot(self) -> list[RecordedRequest]:
        """Return a copy of the recorded requests (safe while the server runs)."""
        with self.lock:
            return list(self.requests)

    def stats_snapshot(self) -> dict[str, int]:
        """Return a copy of the counters."""
        with self.lock:
            return dict(self.stats)

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    # ---- rate limiting ---------------------------------------------------------------
    def _rate_window(self, now: float) -> tuple[float, float]:
        window = self.rate_limit_window if self.rate_limit_window > 0 else 1.0
        start = math.floor(now / window) * window
        return start, start + window

    def _take_rate_token(self, now: float) -> bool:
        """Count this request in the current window; False when over the limit."""
        start, _ = self._rate_window(now)
        if start != self._window_start:
            self._window_start = start
            self._window_count = 0
        if self.rate_limit is not None and self._window_count >= self.rate_limit:
            return False
        self._window_count += 1
        return True

    def rate_limit_state(self, now: float | None = None) -> tuple[int, int, int]:
        """(limit, remaining, reset epoch seconds) for the current window."""
        now = time.time() if now is None else now
        start, end = self._rate_window(now)
        used = self._window_count if start == self._window_start else 0
        limit = self.rate_limit if self.rate_limit is not None else self.unlimited_reported_limit
        return limit, max(0, limit - used), math.ceil(end)

    unlimited_reported_limit = 50_000

    # ---- dispatch --------------------------------------------------------------------
    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Response:
        """Handle one request (called from handler threads)."""
        req = RecordedRequest(method, path, query, headers, body)
        if path.startswith(ADMIN_PREFIX):
            handler = self._admin_routes.get((method, path[len(ADMIN_PREFIX) :].rstrip("/")))
            if handler is None:
                return json_response(404, {"message": f"unknown admin route {method} {path}"})
            try:
                with self.lock:
                    return handler(req)
            except (ValueError, TypeError, KeyError) as exc:
                return json_response(400, {"message": f"bad admin request: {exc}"})
        with self.lock:
            self.stats["requests"] += 1
            if self.record_requests:
                self.requests.append(req)
                cap = self.max_recorded_requests
                if cap is not None and len(self.requests) > cap:
                    del self.requests[: len(self.requests) - cap]
            resp = self._dispatch_locked(req)
            req.status = resp[0]
            delay = self.response_delay(req)
        if delay > 0:  # outside the lock: other connections are served meanwhile
            time.sleep(delay)
        return resp

    def _dispatch_locked(self, req: RecordedRequest) -> Response:
        denied = self.authenticate(req)
        if denied is not None:
            return self.decorate(req, denied)
        for fault in self._faults:
            if req.path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                self.stats["faults"] += 1
                return self.decorate(req, self.error(fault.status, "injected sandbox fault"))
        if not self._take_rate_token(time.time()):
            self.stats["rate_limited"] += 1
            return self.decorate(req, self.error(429, "Rate limit exceeded"))
        return self.decorate(req, self.route(req))

    # ---- subclass hooks --------------------------------------------------------------
    def authenticate(self, req: RecordedRequest) -> Response | None:
        """Return an error response when the request is not authorised."""
        return None

    def route(self, req: RecordedRequest) -> Response:
        """Answer an authorised, non-faulted, non-rate-limited request."""
        return self.error(404, "Not Found")

    def error(self, status: int, message: str) -> Response:
        """Error response in the emulated API's shape."""
        return json_response(status, {"message": message})

    def response_delay(self, req: RecordedRequest) -> float:
        """Seconds to hold this answer back (emulated latency; slept outside the lock)."""
        return 0.0

    def decorate(self, req: RecordedRequest, resp: Response) -> Response:
        """Add headers every response carries (e.g. Braze rate-limit headers)."""
        return resp

    # ---- admin routes ----------------------------------------------------------------
    def add_admin_route(
        self, method: str, name: str, handler: Callable[[RecordedRequest], Response]
    ) -> None:
        """Register ``METHOD /_sandbox/<name>``."""
        self._admin_routes[(method, name)] = handler

    @staticmethod
    def admin_body(req: RecordedRequest) -> dict[str, Any]:
        """Return the admin request's JSON object body ({} when empty)."""
        if not req.body:
            return {}
        data = req.json
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    def _admin_clear_requests(self, req: RecordedRequest) -> Response:
        self.requests.clear()
        return json_response(200, {"ok": True})

    def _admin_fail_next(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        self.fail_next(
            int(data.get("n", 1)), int(data.get("status", 500)), str(data.get("path_prefix", ""))
        )
        return json_response(200, {"ok": True})

    def _admin_rate_limit(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        limit = data.get("limit")
        self.rate_limit = None if limit is None else int(limit)
        if data.get("window") is not None:
            self.rate_limit_window = float(data["window"])
        return json_response(
            200, {"ok": True, "limit": self.rate_limit, "window": self.rate_limit_window}
        )
