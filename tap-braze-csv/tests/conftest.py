"""Fixtures for tap-braze-csv tests (the stream/tap side)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    d = tmp_path / "exports"
    d.mkdir()
    return d


class TapRun:
    """Messages and final in-memory state of one in-process tap run."""

    def __init__(self, messages: list[dict], state: dict, error: BaseException | None) -> None:
        self.messages = messages
        self.state = state
        self.error = error

    @property
    def records(self) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def schema(self) -> dict:
        return next(m["schema"] for m in self.messages if m["type"] == "SCHEMA")

    def bookmark(self, stream: str = "braze_users") -> dict:
        return self.states[-1]["bookmarks"][stream]


def run_tap(
    config: dict,
    state: dict | None = None,
    catalog: dict | None = None,
    *,
    expect_error: bool = False,
) -> TapRun:
    """Run TapBrazeCsv.sync_all in-process, capturing stdout as the SDK test runner does."""
    import json
    from contextlib import redirect_stdout

    from tap_braze_csv.tap import TapBrazeCsv

    tap = TapBrazeCsv(config=config, state=state, catalog=catalog, setup_mapper=True)
    buf = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    error: BaseException | None = None
    with redirect_stdout(buf):
        try:
            tap.sync_all()
        except Exception as exc:
            if not expect_error:
                raise
            error = exc
    if expect_error and error is None:
        raise AssertionError("the tap run was expected to fail")
    buf.flush()
    buf.seek(0)
    messages = [json.loads(line) for line in buf.read().splitlines() if line.strip()]
    return TapRun(messages, tap.state, error)


@pytest.fixture
def tap_runner():
    return run_tap


# -- File-layer fixtures (see braze_csv_source_fixtures.py): `sftp` (a real SFTP server on
# loopback, asyncssh), `s3` (a real S3-compatible server: moto_server), `ssh_client_keys` (RSA/Ed25519 client keys), `gpg_key` / `other_gpg_key`
# (PGP keys made with the gpg binary). The helper modules sftp_server.py and pgp_keys.py are
# importable by path from other test directories too.
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from braze_csv_source_fixtures import (  # noqa: E402
    SftpTestServer,
    gpg_key,
    other_gpg_key,
    s3,
    sftp,
    ssh_client_keys,
)

__all__ = ["SftpTestServer", "gpg_key", "other_gpg_key", "s3", "sftp", "ssh_client_keys"]
