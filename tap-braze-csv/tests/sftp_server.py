"""A real SFTP server on loopback for tests (asyncssh in a background thread).

Reusable from any tests directory (the cross-plugin tests import it by path)::

    import importlib.util, pathlib
    spec = importlib.util.spec_from_file_location(
        "braze_csv_sftp_server", pathlib.Path("tap-braze-csv/tests/sftp_server.py"))
    sftp_server = importlib.util.module_from_spec(spec); spec.loader.exec_module(sftp_server)
    host, port, host_key_line, stop = sftp_server.start_sftp_server(root, {"alice": {"password": "pw"}})

`root` is served as the SFTP root ("/exports/a.zip" is `root / "exports/a.zip"`). A user entry
holds `password` and/or `authorized_keys` (OpenSSH public key lines, see `make_ssh_key`).
`host_key_line` is the known_hosts line for the server (`[127.0.0.1]:PORT ssh-ed25519 AAAA...`).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import asyncssh

HOST = "127.0.0.1"


@dataclass
class SftpFaults:
    """Faults the server injects; mutate while the server runs."""

    #: abort the client's connection once, after the server has served this many file bytes
    drop_after_read_bytes: int | None = None
    #: close this many new connections right away (before the SSH banner)
    drop_connections: int = 0
    #: stall one read for this many seconds (the client's read timeout should fire)
    stall_read_seconds: float = 0.0
    #: counters the tests read back
    connections: int = 0
    bytes_read: int = 0
    #: the furthest byte asked for so far (offset + bytes read), whatever was asked twice
    read_end: int = 0
    drops: int = 0
    read_sizes: list[int] = field(default_factory=list)


class SftpServerHandle(NamedTuple):
    host: str
    port: int
    host_key_line: str
    stop: Any  # Callable[[], None]


def make_ssh_key(
    kind: str = "ed25519", fmt: str = "openssh", passphrase: str | None = None
) -> tuple[str, str]:
    """Generate a client/host key: (private key text, OpenSSH public key line).

    kind: "ed25519" or "rsa"; fmt: "openssh" (BEGIN OPENSSH PRIVATE KEY) or "pem"
    (BEGIN RSA PRIVATE KEY / PKCS#8 for ed25519).
    """
    alg = {"ed25519": "ssh-ed25519", "rsa": "ssh-rsa"}[kind]
    key = (
        asyncssh.generate_private_key(alg, key_size=2048)
        if kind == "rsa"
        else (asyncssh.generate_private_key(alg))
    )
    export_fmt = "openssh" if fmt == "openssh" else ("pkcs1-pem" if kind == "rsa" else "pkcs8-pem")
    # 16 bcrypt rounds, like ssh-keygen (asyncssh's default of 128 takes seconds to load)
    extra = {"rounds": 16} if passphrase and fmt == "openssh" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bcrypt: "only 16 rounds"
        private = key.export_private_key(export_fmt, passphrase, **extra).decode()
    public = key.export_public_key("openssh").decode().strip()
    public = " ".join(public.split()[:2])
    return private, public


def host_key_line_for(private_key_text: str, port: int, host: str = HOST) -> str:
    """The known_hosts line for a server using this host key on host:port."""
    key = asyncssh.import_private_key(private_key_text)
    public = " ".join(key.export_public_key("openssh").decode().split()[:2])
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {public}"


class _RootedSftp(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path, faults: SftpFaults) -> None:
        super().__init__(chan, chroot=str(root).encode())
        self._faults = faults

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:  # type: ignore[override]
        faults = self._faults
        if faults.stall_read_seconds:
            stall, faults.stall_read_seconds = faults.stall_read_seconds, 0.0
            await asyncio.sleep(stall)
        data: bytes = super().read(file_obj, offset, size)  # type: ignore[arg-type,assignment]
        faults.read_sizes.append(size)
        faults.bytes_read += len(data)
        faults.read_end = max(faults.read_end, offset + len(data))
        limit = faults.drop_after_read_bytes
        if limit is not None and faults.bytes_read >= limit:
            faults.drop_after_read_bytes = None
            faults.drops += 1
            self.connection.abort()
        return data


def start_sftp_server(
    root: Path,
    users: dict[str, dict[str, Any]],
    *,
    host_key: str | None = None,
    faults: SftpFaults | None = None,
) -> SftpServerHandle:
    """Start an SFTP server on 127.0.0.1 (random port); returns (host, port, host_key_line, stop).

    host_key: private key text (OpenSSH/PEM) to use as the server's host key; a fresh
    Ed25519 key when omitted. faults: a SftpFaults the caller keeps to inject failures.
    """
    root = Path(root).resolve()
    faults = faults if faults is not None else SftpFaults()
    host_key_text = host_key or make_ssh_key("ed25519")[0]
    server_key = asyncssh.import_private_key(host_key_text)
    authorized: dict[str, set[bytes]] = {
        user: {
            asyncssh.import_public_key(line).public_data for line in spec.get("authorized_keys", [])
        }
        for user, spec in users.items()
    }

    live: set[asyncssh.SSHServerConnection] = set()

    class _Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            faults.connections += 1
            live.add(conn)
            self._conn = conn
            if faults.drop_connections > 0:
                faults.drop_connections -= 1
                faults.drops += 1
                conn.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            live.discard(self._conn)

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            expected = users.get(username, {}).get("password")
            return expected is not None and password == expected

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return key.public_data in authorized.get(username, set())

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-sftp-server", daemon=True)
    thread.start()

    async def _listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            HOST,
            0,
            server_host_keys=[server_key],
            server_factory=_Server,
            sftp_factory=lambda chan: _RootedSftp(chan, root, faults),
            allow_scp=False,
            login_timeout=30,
        )

    acceptor = asyncio.run_coroutine_threadsafe(_listen(), loop).result(30)
    port = acceptor.get_port()

    def stop() -> None:
        async def _close() -> None:
            acceptor.close()
            for conn in list(live):
                conn.abort()
            await acceptor.wait_closed()
            await asyncio.sleep(0.05)  # let aborted connections' tasks finish
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        if loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(_close(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()

    return SftpServerHandle(HOST, port, host_key_line_for(host_key_text, port), stop)
