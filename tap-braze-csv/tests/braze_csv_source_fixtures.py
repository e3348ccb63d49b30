"""Pytest fixtures for the file layer: a loopback SFTP server, SSH client keys, PGP keys.

Test modules import them by module name (pytest's `pythonpath` setting puts this directory on
sys.path); conftest.py re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pgp_keys
import pytest
import s3_server
import sftp_server

__all__ = [
    "SftpTestServer",
    "gpg_key",
    "other_gpg_key",
    "s3",
    "sftp",
    "ssh_client_keys",
]

SFTP_USER = "exporter"
SFTP_PASSWORD = "Sftp-Pa55word-never-logged"
KEY_USER = "keyuser"
KEY_PASSPHRASE = "ssh-key-passphrase-never-logged"


@dataclass
class SftpTestServer:
    """A running server: files go under `root` ("/x.csv" is root / "x.csv")."""

    root: Path
    host: str
    port: int
    host_key_line: str
    faults: sftp_server.SftpFaults
    client_keys: dict[str, str] = field(repr=False)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The `sftp` setting for password login with the host key pinned; overrides win."""
        cfg: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": SFTP_USER,
            "password": SFTP_PASSWORD,
            "known_hosts": self.host_key_line,
            "timeout": 10,
            "retries": 2,
            "retry_wait": 0.05,
        }
        cfg.update(overrides)
        return {k: v for k, v in cfg.items() if v is not None}

    def key_config(self, key_name: str, **overrides: Any) -> dict[str, Any]:
        """The `sftp` setting for public-key login with one of `client_keys`."""
        passphrase = KEY_PASSPHRASE if key_name.endswith("_encrypted") else None
        settings: dict[str, Any] = {
            "username": KEY_USER,
            "password": None,
            "private_key": self.client_keys[key_name],
            "private_key_passphrase": passphrase,
        }
        settings.update(overrides)
        return self.config(**settings)

    def put(self, relpath: str, data: bytes | str) -> Path:
        """Write a file on the server."""
        path = self.root / relpath.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return path


@pytest.fixture(scope="session")
def ssh_client_keys() -> dict[str, tuple[str, str]]:
    """Client keys: name -> (private key text, public key line)."""
    return {
        "rsa_pem": sftp_server.make_ssh_key("rsa", "pem"),
        "rsa_openssh": sftp_server.make_ssh_key("rsa", "openssh"),
        "ed25519_openssh": sftp_server.make_ssh_key("ed25519", "openssh"),
        "ed25519_pem": sftp_server.make_ssh_key("ed25519", "pem"),
        "ed25519_openssh_encrypted": sftp_server.make_ssh_key("ed25519", "openssh", KEY_PASSPHRASE),
        "rsa_pem_encrypted": sftp_server.make_ssh_key("rsa", "pem", KEY_PASSPHRASE),
    }


@pytest.fixture
def sftp(tmp_path: Path, ssh_client_keys: dict[str, tuple[str, str]]) -> Iterator[SftpTestServer]:
    """A real SFTP server (asyncssh) on 127.0.0.1 with password and public-key users."""
    root = tmp_path / "sftp-root"
    root.mkdir()
    faults = sftp_server.SftpFaults()
    users = {
        SFTP_USER: {"password": SFTP_PASSWORD},
        KEY_USER: {"authorized_keys": [pub for _, pub in ssh_client_keys.values()]},
    }
    handle = sftp_server.start_sftp_server(root, users, faults=faults)
    try:
        yield SftpTestServer(
            root=root,
            host=handle.host,
            port=handle.port,
            host_key_line=handle.host_key_line,
            faults=faults,
            client_keys={name: private for name, (private, _) in ssh_client_keys.items()},
        )
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgp_keys.GpgKey]:
    """A passphrase-protected PGP key pair made with the gpg binary."""
    key = pgp_keys.make_gpg_key(tmp_path_factory.mktemp("gpg"))
    yield key
    pgp_keys.cleanup()


@pytest.fixture(scope="session")
def other_gpg_key(
    tmp_path_factory: pytest.TempPathFactory, gpg_key: pgp_keys.GpgKey
) -> pgp_keys.GpgKey:
    """A second key pair (files encrypted to it cannot be read with `gpg_key`)."""
    return pgp_keys.make_gpg_key(
        tmp_path_factory.mktemp("gpg2"),
        passphrase="other-key-passphrase",
        name="Someone Else <else@example.com>",
    )


@pytest.fixture(scope="session")
def s3() -> Iterator[s3_server.S3TestServer]:
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1, one per session."""
    server = s3_server.start_s3_server()
    try:
        yield server
    finally:
        server.stop()
