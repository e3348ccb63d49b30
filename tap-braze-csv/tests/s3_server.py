"""A real S3-compatible server for tests: moto's standalone server (`moto_server`) on loopback.

`start_s3_server()` runs it as a subprocess on a free port and returns an `S3TestServer` with
the endpoint URL, credentials the server accepts and a boto3 client for putting objects.
Importable by path from other test directories (tests/ e2e, benchmarks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "AKIAH3TESTACCESSKEY"
SECRET_KEY = "s3-secret-key-never-logged-7e1f"
REGION = "us-east-1"


@dataclass
class S3TestServer:
    """A running moto server: `endpoint`, credentials, and helpers to fill buckets."""

    endpoint: str
    process: subprocess.Popen = field(repr=False)
    access_key: str = ACCESS_KEY
    secret_key: str = field(default=SECRET_KEY, repr=False)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def new_bucket(self, prefix: str = "braze") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The tap's `s3` setting for this server."""
        cfg: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
        }
        cfg.update(overrides)
        return cfg

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _moto_server() -> list[str]:
    exe = Path(sys.executable).parent / "moto_server"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "moto.server"]


def start_s3_server(timeout: float = 60) -> S3TestServer:
    """Start `moto_server -H 127.0.0.1 -p 0` and wait until it serves requests."""
    log = open(os.devnull, "wb")  # noqa: SIM115 - owned by the process below
    proc = subprocess.Popen(
        [*_moto_server(), "-H", "127.0.0.1", "-p", "0"],
        stdout=log,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    endpoint = None
    seen = b""
    while time.monotonic() < deadline and endpoint is None:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen += line
        match = re.search(rb"Running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            endpoint = match.group(1).decode()
    if endpoint is None:
        proc.kill()
        raise RuntimeError(f"moto_server did not start: {seen.decode(errors='replace')[-2000:]}")
    # Keep draining its log so the pipe never fills and blocks the server.
    import threading

    threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
    return S3TestServer(endpoint=endpoint, process=proc)


def _drain(stream: Any) -> None:
    for _ in iter(stream.readline, b""):
        pass
