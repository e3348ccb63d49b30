"""Fixtures for tap-braze-csv tests (the stream/tap side)."""

from __future__ import annotations

from pathlib import Path

import pytest
from braze_csv_testkit import run_tap


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    d = tmp_path / "exports"
    d.mkdir()
    return d


@pytest.fixture
def tap_runner():
    return run_tap


# -- File-layer fixtures (see braze_csv_source_fixtures.py): `sftp` (a real SFTP server on
# loopback, asyncssh), `s3` (a real S3-compatible server: moto_server), `ssh_client_keys` (RSA/Ed25519 client keys), `gpg_key` / `other_gpg_key`
# (PGP keys made with the gpg binary). The helper modules sftp_server.py and pgp_keys.py are
# importable by path from other test directories too.
from braze_csv_source_fixtures import (  # noqa: E402
    SftpTestServer,
    gpg_key,
    other_gpg_key,
    s3,
    sftp,
    ssh_client_keys,
)

__all__ = ["SftpTestServer", "gpg_key", "other_gpg_key", "s3", "sftp", "ssh_client_keys"]
