"""Input files on an SFTP server (paramiko): listing, globbing, streaming reads.

SFTP has its own glob (over `listdir_attr` + fnmatch, with `**`), checks the server's host key
against `known_hosts`, and reconnects (bounded) when a connection drops, resuming a read at the
byte it had reached. Imported lazily by `routing.make_source` (paramiko is slow to import).

The SDK's `contrib.filesystem` SFTP is not used: it fails on its own config and has no glob
(see the README).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fnmatch
import io
import logging
import posixpath
import socket
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar, cast

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.hostkeys import HostKeyEntry

from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sources import (
    FileRef,
    FileSource,
    FileVanishedError,
    SftpSettings,
    check_unchanged,
    has_magic,
    normalise_key_text,
    read_setting_file,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes requested per SFTP read (paramiko's maximum request size).
SFTP_CHUNK = 32768
#: Bytes requested ahead of the reader (SFTP_WINDOW / SFTP_CHUNK requests in flight): bounds
#: memory (paramiko's own `prefetch()` buffers a whole file when the consumer is slower than the
#: network) while keeping the pipe full.
SFTP_WINDOW = 8 * 1024 * 1024


def load_private_key(value: str, passphrase: str | None) -> paramiko.PKey:
    """Load a paramiko key from PEM/OpenSSH text or a key file path (RSA, Ed25519, ECDSA).

    Messages never include the key or the passphrase.
    """
    text = normalise_key_text(value) if "-----BEGIN" in value else read_setting_file(value)
    if text is None or "-----BEGIN" not in text:
        raise BrazeCsvError(
            "sftp.private_key is neither a private key (PEM or OpenSSH text) "
            "nor the path of a readable key file"
        )
    loaded = _decrypt_key(text.encode(), passphrase.encode() if passphrase else None)
    key_class = _paramiko_key_class(loaded)
    # Hand paramiko the decrypted key (OpenSSH format, in memory): the passphrase KDF runs once,
    # and paramiko reads Ed25519 only in OpenSSH format (not PKCS#8 PEM).
    opened = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    try:
        return key_class.from_private_key(io.StringIO(opened.decode()))
    except Exception:
        raise BrazeCsvError("sftp.private_key could not be loaded") from None


def _decrypt_key(data: bytes, password: bytes | None) -> Any:
    """Return the private key ``data`` holds (decrypted with ``password`` when it needs one)."""

    def _load(pw: bytes | None) -> Any:
        if b"OPENSSH PRIVATE KEY" in data:
            return serialization.load_ssh_private_key(data, password=pw)
        return serialization.load_pem_private_key(data, password=pw)

    try:
        try:
            return _load(password)
        except TypeError:
            # "Password was given but private key is not encrypted" -> use it without one;
            # "Password was not given but private key is encrypted" -> re-raised below.
            if password is None:
                raise
            return _load(None)
    except TypeError:
        raise BrazeCsvError(
            "sftp.private_key is encrypted: set sftp.private_key_passphrase"
        ) from None
    except (ValueError, paramiko.SSHException):
        if password is not None:
            raise BrazeCsvError(
                "sftp.private_key could not be decrypted: sftp.private_key_passphrase is wrong "
                "(or the key is corrupt)"
            ) from None
        raise BrazeCsvError("sftp.private_key is not a valid private key") from None
    except Exception:  # unsupported algorithm or other backend errors
        raise BrazeCsvError("sftp.private_key is not a supported private key") from None


def _paramiko_key_class(loaded: Any) -> type[paramiko.PKey]:
    """Return paramiko's class for a loaded key (RSA, Ed25519 or ECDSA)."""
    if isinstance(loaded, rsa.RSAPrivateKey):
        return paramiko.RSAKey
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return paramiko.Ed25519Key
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey
    raise BrazeCsvError("sftp.private_key: only RSA, Ed25519 and ECDSA keys are supported")


HostKeyList = list[tuple[str, str, paramiko.PKey]]


def parse_known_hosts(value: str) -> HostKeyList:
    """(hostname, key type, key) from known_hosts lines, or from the file a path names.

    Hostnames may be hashed (`|1|...`); non-standard ports are written `[host]:port`.
    """
    text = read_setting_file(value)
    if text is None and " " in value.strip():
        text = value
    if text is None:
        raise BrazeCsvError(
            "sftp.known_hosts is neither known_hosts lines ('host key-type base64-key') "
            "nor the path of a readable known_hosts file"
        )
    keys: HostKeyList = []
    problems: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        keys.extend(_host_keys_of_line(raw.strip(), lineno, problems))
    for problem in problems:
        logger.warning("sftp.known_hosts %s: ignored", problem)
    if not keys:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise BrazeCsvError(f"sftp.known_hosts holds no usable host key line{detail}")
    return keys


def _host_keys_of_line(line: str, lineno: int, problems: list[str]) -> HostKeyList:
    """Return the host keys of one known_hosts line; what is wrong with it goes to ``problems``."""
    if not line or line.startswith("#") or line.startswith("@"):
        return []  # markers (@cert-authority, @revoked) are not supported: entry ignored
    entry = _host_entry(line, lineno)
    if entry is None:
        problems.append(f"line {lineno} is not a usable host key line")
        return []
    hostnames = [h for h in entry.hostnames if _hashed_host_ok(h)]
    if len(hostnames) < len(entry.hostnames):
        # paramiko would fail later, mid-connect, with a bare AssertionError.
        problems.append(
            f"line {lineno} has a malformed hashed host name (expected "
            "'|1|<base64 salt>|<base64 hash>' as `ssh-keygen -H` writes it)"
        )
    return [(hostname, entry.key.get_name(), entry.key) for hostname in hostnames]


def _host_entry(line: str, lineno: int) -> HostKeyEntry | None:
    """Parse a known_hosts line; None when paramiko cannot read it or its key."""
    try:
        entry = HostKeyEntry.from_line(line, lineno)
    except Exception:
        return None
    return entry if entry is not None and entry.key is not None else None


def _hashed_host_ok(hostname: str) -> bool:
    """Plain names pass; a hashed one needs a 20-byte salt and a 20-byte SHA-1 (OpenSSH's form)."""
    if not hostname.startswith("|1|"):
        return not hostname.startswith("|")
    parts = hostname[3:].split("|")
    if len(parts) != 2:
        return False
    try:
        return all(len(base64.b64decode(p, validate=True)) == 20 for p in parts)
    except (binascii.Error, ValueError):
        return False


class _UnknownHostKeyError(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname = hostname
        self.key = key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host key: refuse (like RejectPolicy, with a message saying what to do) or allow."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.allow:
            raise _UnknownHostKeyError(hostname, key)
        logger.warning(
            "SFTP host %s presented host key %s %s which is not in sftp.known_hosts; accepted "
            "because sftp.allow_unknown_host_key is true (add it to sftp.known_hosts: '%s %s %s')",
            hostname,
            key.get_name(),
            key.fingerprint,
            hostname,
            key.get_name(),
            key.get_base64(),
        )


_PERMANENT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}


def _is_transient(exc: BaseException) -> bool:
    """Whether an SFTP failure may go away on reconnect (network, timeouts, dropped sessions)."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, (_UnknownHostKeyError, BrazeCsvError, socket.gaierror)):
        return False
    if isinstance(exc, (EOFError, paramiko.SSHException, TimeoutError, socket.timeout)):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in _PERMANENT_ERRNOS
    return False


def _describe_exc(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retry_transient(
    settings: SftpSettings,
    op: Callable[[], T],
    *,
    warn: Callable[[BaseException, float, int, int], None],
    give_up: Callable[[Exception, int], BaseException | None] = lambda exc, attempt: None,
    before_wait: Callable[[], None] = lambda: None,
    after_wait: Callable[[], None] = lambda: None,
) -> T:
    """Run ``op``, again after a transient failure: the one SFTP reconnect-and-retry loop.

    At most ``settings.retries`` retries in a row, waiting ``retry_wait * 2 ** (n - 1)``
    seconds before the n-th. A failure that is not transient, or the last attempt's, ends the
    loop: ``give_up(exc, attempt)`` names the error to raise instead (None: ``exc`` itself).
    Before each wait ``warn(exc, wait, next_attempt, attempts)`` logs and ``before_wait()``
    drops what broke; ``after_wait()`` may reconnect.
    """
    attempts = settings.retries + 1
    attempt = 1
    while True:
        try:
            return op()
        except Exception as exc:
            if not _is_transient(exc) or attempt >= attempts:
                replacement = give_up(exc, attempt)
                if replacement is None:
                    raise
                raise replacement from None
            wait = settings.retry_wait * 2 ** (attempt - 1)
            warn(exc, wait, attempt + 1, attempts)
            attempt += 1
            before_wait()
            time.sleep(wait)
            after_wait()


# --------------------------------------------------------------------------------------------
# SFTP


class SftpSource(FileSource):
    """Files on an SFTP server, one connection reused for listing and reading."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings
        self.origin = f"sftp://{settings.username}@{settings.host}:{settings.port}"
        self._pkey = (
            load_private_key(settings.private_key, settings.private_key_passphrase)
            if settings.private_key
            else None
        )
        self._host_keys = parse_known_hosts(settings.known_hosts) if settings.known_hosts else []
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        #: bumped on each (re)connect so open readers know their handle is stale
        self.generation = 0
        self._cwd: str | None = None

    def __repr__(self) -> str:
        return f"SftpSource({self.origin})"

    def describe(self, pattern: str) -> str:
        """Show a pattern as in messages: the server's URI plus the pattern."""
        sep = "" if pattern.startswith("/") else "/"
        return f"{self.origin}{sep}{pattern}"

    # -- connection ---------------------------------------------------------------------------

    def _connect_once(self) -> None:
        s = self.settings
        client = paramiko.SSHClient()
        host_keys = client.get_host_keys()
        for hostname, key_type, key in self._host_keys:
            host_keys.add(hostname, key_type, key)
        client.set_missing_host_key_policy(_HostKeyPolicy(s.allow_unknown_host_key))
        try:
            client.connect(
                s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                pkey=self._pkey,
                timeout=s.timeout,
                banner_timeout=s.timeout,
                auth_timeout=s.timeout,
                channel_timeout=s.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(s.timeout)
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        self.generation += 1

    def _connect(self) -> paramiko.SFTPClient:
        s = self.settings

        def give_up(exc: Exception, attempt: int) -> BaseException | None:
            if isinstance(exc, BrazeCsvError):
                return None
            return BrazeCsvError(
                f"SFTP connection to {s.host}:{s.port} as {s.username} failed after "
                f"{attempt} attempt(s): {_describe_exc(exc)}"
            )

        def warn(exc: BaseException, wait: float, attempt: int, attempts: int) -> None:
            logger.warning(
                "SFTP connection to %s:%s failed (%s); retrying in %.1fs (attempt %d of %d)",
                s.host,
                s.port,
                _describe_exc(exc),
                wait,
                attempt,
                attempts,
            )

        _retry_transient(s, self._connect_explained, warn=warn, give_up=give_up)
        assert self._sftp is not None
        return self._sftp

    def _connect_explained(self) -> None:
        """Connect once; a refused host key or login, or an unknown host, as a clear error."""
        s = self.settings
        try:
            self._connect_once()
        except _UnknownHostKeyError as exc:
            key = exc.key
            raise BrazeCsvError(
                f"SFTP host {s.host}:{s.port} presented host key {key.get_name()} "
                f"{key.fingerprint}, which is not in sftp.known_hosts. After checking the "
                f"fingerprint with the server's administrator, add this line to "
                f"sftp.known_hosts: '{exc.hostname} {key.get_name()} {key.get_base64()}' "
                f"(or set sftp.allow_unknown_host_key to true to accept any host key)"
            ) from None
        except paramiko.BadHostKeyException as exc:
            raise BrazeCsvError(
                f"SFTP host {s.host}:{s.port} presented host key {exc.key.get_name()} "
                f"{exc.key.fingerprint}, but sftp.known_hosts holds "
                f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint} for it: "
                "refusing to connect (the server's key changed, or the connection is "
                "being intercepted); update sftp.known_hosts if the change is expected"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise BrazeCsvError(self._auth_failure(exc)) from None
        except socket.gaierror as exc:
            raise BrazeCsvError(f"SFTP host {s.host} cannot be resolved ({exc.strerror})") from None

    def _auth_failure(self, exc: paramiko.AuthenticationException) -> str:
        s = self.settings
        how = "private key" if self._pkey is not None else "password"
        if self._pkey is not None and s.password:
            how = "private key and password"
        hint = "check sftp.username and the credentials"
        if isinstance(exc, paramiko.BadAuthenticationType):
            allowed = ", ".join(exc.allowed_types or []) or "none"
            hint = f"the server only accepts: {allowed}"
        return (
            f"SFTP authentication failed for user {s.username} on {s.host}:{s.port} "
            f"({how} rejected); {hint}"
        )

    def sftp(self) -> paramiko.SFTPClient:
        """Return the live SFTP session (connecting on first use)."""
        if self._sftp is None:
            return self._connect()
        return self._sftp

    def reconnect(self) -> paramiko.SFTPClient:
        """Drop the current session and connect again."""
        self._drop()
        return self._connect()

    def _drop(self) -> None:
        client, self._client, self._sftp = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken: closing is best effort
                client.close()

    def close(self) -> None:
        """Close the SSH connection."""
        self._drop()

    def call(self, what: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run an SFTP operation, reconnecting (bounded) on transient failures."""

        def warn(exc: BaseException, wait: float, attempt: int, attempts: int) -> None:
            logger.warning(
                "SFTP %s on %s failed (%s); reconnecting in %.1fs (attempt %d of %d)",
                what,
                self.origin,
                _describe_exc(exc),
                wait,
                attempt,
                attempts,
            )

        return _retry_transient(
            self.settings, lambda: fn(self.sftp()), warn=warn, before_wait=self._drop
        )

    def _absolute(self, path: str) -> str:
        if not path.startswith("/"):
            if self._cwd is None:
                self._cwd = self.call("normalize", lambda s: s.normalize("."))
            path = posixpath.join(self._cwd, path)
        return posixpath.normpath(path)

    # -- finding ------------------------------------------------------------------------------

    def _stat(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.call("stat", lambda s: s.stat(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _is_transient(exc):
                raise BrazeCsvError(f"{self.origin}{path}: {_describe_exc(exc)}") from None
            raise BrazeCsvError(
                f"{self.origin}{path}: cannot be read ({exc.strerror or exc})"
            ) from None

    def _listdir(self, path: str, cache: dict[str, list[paramiko.SFTPAttributes]]) -> list[Any]:
        if path not in cache:
            try:
                cache[path] = self.call("listdir", lambda s: s.listdir_attr(path))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    cache[path] = []
                elif exc.errno in (errno.EACCES, errno.EPERM):
                    raise BrazeCsvError(
                        f"{self.origin}{path}: directory cannot be listed (permission denied)"
                    ) from None
                else:
                    raise BrazeCsvError(f"{self.origin}{path}: {_describe_exc(exc)}") from None
        return cache[path]

    def _ref(self, path: str, attr: paramiko.SFTPAttributes) -> FileRef:
        return FileRef(path, int(attr.st_size or 0), float(attr.st_mtime or 0), self.origin)

    def _literal(self, path: str) -> FileRef | None:
        absolute = self._absolute(path)
        attr = self._stat(absolute)
        if attr is None:
            return None
        if stat.S_ISDIR(attr.st_mode or 0):
            raise self._directory_error(path)
        return self._ref(absolute, attr)

    def _glob(self, pattern: str) -> list[FileRef]:
        parts = [p for p in self._absolute(pattern).split("/") if p]
        base: list[str] = []
        while parts and not has_magic(parts[0]):
            base.append(parts.pop(0))
        results: dict[str, FileRef] = {}
        self._walk("/" + "/".join(base), parts, results, {})
        return list(results.values())

    def _walk(
        self,
        directory: str,
        parts: list[str],
        out: dict[str, FileRef],
        cache: dict[str, list[paramiko.SFTPAttributes]],
    ) -> None:
        """Glob over listdir_attr: `**` is zero or more directories; wildcards skip dot-files."""
        if parts[0] == "**":
            self._walk_any_depth(directory, parts, out, cache)
        elif not has_magic(parts[0]):
            self._walk_literal(directory, parts, out, cache)
        else:
            self._walk_wildcard(directory, parts, out, cache)

    def _walk_any_depth(
        self,
        directory: str,
        parts: list[str],
        out: dict[str, FileRef],
        cache: dict[str, list[paramiko.SFTPAttributes]],
    ) -> None:
        """`**`: the rest of the pattern here, and `**` again in every subdirectory."""
        rest = parts[1:]
        if rest:
            self._walk(directory, rest, out, cache)
        for name, attr, is_link in self._entries(directory, cache):
            full = posixpath.join(directory, name)
            if stat.S_ISDIR(attr.st_mode or 0):
                if not is_link:  # `**` does not descend through links (no loops)
                    self._walk(full, parts, out, cache)
            elif not rest and stat.S_ISREG(attr.st_mode or 0):
                out[full] = self._ref(full, attr)

    def _walk_literal(
        self,
        directory: str,
        parts: list[str],
        out: dict[str, FileRef],
        cache: dict[str, list[paramiko.SFTPAttributes]],
    ) -> None:
        """Match a name without wildcards: descend into it, or stat it when it is the last part."""
        full = posixpath.join(directory, parts[0])
        if parts[1:]:
            self._walk(full, parts[1:], out, cache)
            return
        found = self._stat(full)
        if found is not None and stat.S_ISREG(found.st_mode or 0):
            out[full] = self._ref(full, found)

    def _walk_wildcard(
        self,
        directory: str,
        parts: list[str],
        out: dict[str, FileRef],
        cache: dict[str, list[paramiko.SFTPAttributes]],
    ) -> None:
        """Match a name with wildcards: every matching entry (directories if more parts follow)."""
        part, rest = parts[0], parts[1:]
        for name, attr, _ in self._entries(directory, cache):
            if not fnmatch.fnmatchcase(name, part):
                continue
            full = posixpath.join(directory, name)
            if rest:
                if stat.S_ISDIR(attr.st_mode or 0):
                    self._walk(full, rest, out, cache)
            elif stat.S_ISREG(attr.st_mode or 0):
                out[full] = self._ref(full, attr)

    def _entries(
        self, directory: str, cache: dict[str, list[paramiko.SFTPAttributes]]
    ) -> Iterator[tuple[str, paramiko.SFTPAttributes, bool]]:
        """Non-hidden entries of a directory: (name, attributes with links resolved, is_link)."""
        for entry in self._listdir(directory, cache):
            name = entry.filename
            if name.startswith("."):
                continue
            if not stat.S_ISLNK(entry.st_mode or 0):
                yield name, entry, False
                continue
            target = self._stat(posixpath.join(directory, name))
            if target is not None:  # else a dangling link
                yield name, target, True

    # -- reading ------------------------------------------------------------------------------

    def open(self, ref: FileRef) -> BinaryIO:
        """Stream a remote file with pipelined reads, resuming after a dropped connection."""
        reader = _SftpReader(self, ref)
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=1024 * 1024))


class _SftpReader(io.RawIOBase):
    """Sequential reader of one remote file.

    Reads a window of SFTP_WINDOW bytes at a time as pipelined 32 KiB requests (`readv`), so
    throughput is close to paramiko's `prefetch()` while memory stays bounded. When the
    connection fails it reconnects (at most `sftp.retries` times in a row) and continues from
    the byte it had reached, after checking the file did not change.
    """

    def __init__(self, source: SftpSource, ref: FileRef) -> None:
        super().__init__()
        self._source = source
        self._ref = ref
        self._file: paramiko.SFTPFile | None = None
        self._generation = -1
        self._buf = memoryview(b"")
        self._fetched = 0  # offset of the first byte not yet fetched into _buf
        self._chunks: Iterator[bytes] | None = None
        self._open_handle()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _open_handle(self) -> None:
        ref, source = self._ref, self._source

        def _open(sftp: paramiko.SFTPClient) -> paramiko.SFTPFile:
            handle = sftp.open(ref.path, "rb")
            try:
                attr = handle.stat()
            except BaseException:
                handle.close()
                raise
            try:
                check_unchanged(ref, int(attr.st_size or 0), float(attr.st_mtime or 0))
            except BrazeCsvError:
                handle.close()
                raise
            return handle

        try:
            self._file = source.call("open", _open)
        except FileNotFoundError:
            raise FileVanishedError(ref) from None
        except BrazeCsvError:
            raise
        except OSError as exc:
            raise BrazeCsvError(
                f"{ref.uri}: cannot be read ({exc.strerror or _describe_exc(exc)})"
            ) from None
        except Exception as exc:
            raise BrazeCsvError(f"{ref.uri}: cannot be read ({_describe_exc(exc)})") from None
        self._generation = source.generation
        self._chunks = None

    def _window(self) -> Iterator[bytes]:
        assert self._file is not None
        start = self._fetched
        end = min(self._ref.size, start + SFTP_WINDOW)
        chunks = [(off, min(SFTP_CHUNK, end - off)) for off in range(start, end, SFTP_CHUNK)]
        # No max_concurrent_prefetch_requests: paramiko's request thread then sends the whole
        # window at once and ends; a capped one polls for the window's duration, and dies with
        # a traceback on stderr when the connection drops.
        return iter(self._file.readv(chunks))

    def _next_chunk(self) -> bytes:
        ref = self._ref

        def give_up(exc: Exception, attempt: int) -> BaseException | None:
            if isinstance(exc, BrazeCsvError):
                return None
            return BrazeCsvError(
                f"{ref.uri}: reading failed at byte {self._fetched} of "
                f"{ref.size} after {attempt} attempt(s): {_describe_exc(exc)}"
            )

        def warn(exc: BaseException, wait: float, attempt: int, attempts: int) -> None:
            logger.warning(
                "SFTP read of %s failed at byte %d (%s); reconnecting in %.1fs (attempt %d of %d)",
                ref.uri,
                self._fetched,
                _describe_exc(exc),
                wait,
                attempt,
                attempts,
            )

        return _retry_transient(
            self._source.settings,
            self._fetch_chunk,
            warn=warn,
            give_up=give_up,
            before_wait=self._close_handle,
            after_wait=self._reconnect,
        )

    def _fetch_chunk(self) -> bytes:
        """Return the next chunk of the file, (re)opening it after a reconnect."""
        while True:
            if self._file is None or self._generation != self._source.generation:
                self._open_handle()
            if self._chunks is None:
                self._chunks = self._window()
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
                continue
            if not chunk:
                raise BrazeCsvError(
                    f"{self._ref.uri}: ended at byte {self._fetched} of {self._ref.size} "
                    "(truncated while being read)"
                )
            return chunk

    def _reconnect(self) -> None:
        try:
            self._source.reconnect()
        except BrazeCsvError as conn_exc:
            raise BrazeCsvError(
                f"{self._ref.uri}: connection lost at byte {self._fetched} of "
                f"{self._ref.size} and could not be re-established: {conn_exc}"
            ) from None

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed file")
        if not self._buf:
            if self._fetched >= self._ref.size:
                return 0
            chunk = self._next_chunk()
            self._fetched += len(chunk)
            self._buf = memoryview(chunk)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _close_handle(self) -> None:
        handle, self._file, self._chunks = self._file, None, None
        if handle is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                handle.close()

    def close(self) -> None:
        if not self.closed:
            self._close_handle()
        super().close()
