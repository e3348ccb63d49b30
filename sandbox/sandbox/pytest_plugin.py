"""pytest fixtures (registered through pytest11).

``braze_sandbox`` and ``lytics_sandbox``: the emulators on loopback. ``pg_url``: one real
PostgreSQL server per test session, shared by every test directory (the membership store
tests, the interoperability matrix).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.braze import BrazeSandbox
from sandbox.lytics import LyticsSandbox


@pytest.fixture
def braze_sandbox() -> Iterator[BrazeSandbox]:
    """Yield a started Braze emulator on 127.0.0.1 (random port), stopped after the test."""
    with BrazeSandbox() as server:
        yield server


@pytest.fixture
def lytics_sandbox() -> Iterator[LyticsSandbox]:
    """Yield a started Lytics emulator on 127.0.0.1 (random port), stopped after the test."""
    with LyticsSandbox() as server:
        yield server


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """$BRAZE_AUDIENCE_TEST_PG_URL, or a throwaway PostgreSQL server on 127.0.0.1."""
    env = os.environ.get("BRAZE_AUDIENCE_TEST_PG_URL")
    if env:
        yield env
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail(
            "PostgreSQL is required for the store and interoperability tests: install it "
            "(apt-get install postgresql, or scripts/ensure-system-deps.sh) or set "
            "BRAZE_AUDIENCE_TEST_PG_URL"
        )
    tmp = Path(tempfile.mkdtemp(prefix="braze-audience-pg-"))
    data = tmp / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the postgres user.
        shutil.chown(tmp, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
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
