"""Input files: the `FileSource` interface, local files and the validated `sftp` setting.

A `FileSource`'s `find(patterns)` lists the matching files as `FileRef`s and `open(ref)` streams
one. The SFTP client (paramiko) is in `sftp.py`, object storage (`s3://`, `gs://`, `az://`
paths) in `cloud.py`; `routing.make_source(config)` picks the source for the configured paths.
This module imports neither, so all three can build on it.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from tap_braze_csv.errors import BrazeCsvError

_MAGIC = re.compile(r"[*?[]")
LOCAL_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class FileRef:
    """One input file: its path on its source, its size and modification time (epoch seconds)."""

    path: str
    size: int
    mtime: float
    #: "sftp://user@host:port" for remote files, "s3://" (etc.) for objects, "" for local ones
    #: (part of the identity).
    origin: str = ""
    #: Object storage entity tag ("" for files): changes whenever the object's content does.
    etag: str = ""

    @property
    def uri(self) -> str:
        """Where the file is, for messages and `_sdc_source_file` (never holds a secret)."""
        return f"{self.origin}{self.path}" if self.origin else self.path


class FileVanishedError(BrazeCsvError):
    """A listed file is gone when it is opened (Braze deletes its S3 exports after hours)."""

    def __init__(self, ref: FileRef) -> None:
        super().__init__(f"{ref.uri}: no such file (removed since it was listed)")
        self.ref = ref


def has_magic(pattern: str) -> bool:
    """Whether a path pattern holds glob wildcards (`*`, `?`, `[`)."""
    return _MAGIC.search(pattern) is not None


class FileSource(ABC):
    """Finds and opens input files; use as a context manager or call `close()`."""

    def find(self, patterns: list[str]) -> list[FileRef]:
        """Files matching any of the patterns (glob, `**` recursive), sorted by path, no duplicates.

        A literal path that does not exist, or a pattern matching no file, is an error. A file
        whose name holds glob characters (`VIP [EU].zip`) is also found by its literal name.
        """
        if isinstance(patterns, str):
            patterns = [patterns]
        found: dict[str, FileRef] = {}
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern.strip():
                raise BrazeCsvError(f"paths: {pattern!r} is not a file path or glob")
            for ref in self._find_one(pattern):
                found.setdefault(ref.path, ref)
        return [found[path] for path in sorted(found)]

    def _find_one(self, pattern: str) -> list[FileRef]:
        if not has_magic(pattern):
            ref = self._literal(pattern)
            if ref is None:
                raise BrazeCsvError(f"{self.describe(pattern)}: no such file")
            return [ref]
        refs = self._glob(pattern)
        if not refs:
            try:
                literal = self._literal(pattern)
            except BrazeCsvError:
                literal = None
            if literal is None:
                raise BrazeCsvError(f"{self.describe(pattern)}: no file matches this pattern")
            refs = [literal]
        return refs

    def _directory_error(self, pattern: str) -> BrazeCsvError:
        stem = pattern.rstrip("/")
        return BrazeCsvError(
            f"{self.describe(pattern)}: is a directory; give a glob such as {stem}/*.zip "
            f"or {stem}/**/*.csv"
        )

    @abstractmethod
    def _literal(self, path: str) -> FileRef | None:
        """Return the file at a literal path, None if there is none; raise for a directory."""

    @abstractmethod
    def _glob(self, pattern: str) -> list[FileRef]:
        """Regular files matching a glob (possibly none)."""

    @abstractmethod
    def open(self, ref: FileRef) -> BinaryIO:
        """Open a file for streaming binary reads."""

    def describe(self, pattern: str) -> str:
        """Show a pattern as in messages."""
        return pattern

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections (nothing for local files)."""

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_unchanged(ref: FileRef, size: int, mtime: float) -> None:
    """Refuse a file whose size or mtime changed since it was listed (still being written?)."""
    if size != ref.size or mtime != ref.mtime:
        raise BrazeCsvError(
            f"{ref.uri}: changed since it was listed (size {ref.size} -> {size}, "
            f"mtime {ref.mtime} -> {mtime}); it may still be being written, run again later"
        )


# --------------------------------------------------------------------------------------------
# Local files


class LocalSource(FileSource):
    """Files on the local filesystem; relative patterns are relative to the working directory."""

    def _literal(self, path: str) -> FileRef | None:
        expanded = os.path.expanduser(path)
        try:
            st = os.stat(expanded)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise BrazeCsvError(f"{path}: cannot be read ({exc.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise self._directory_error(path)
        return FileRef(os.path.abspath(expanded), st.st_size, st.st_mtime)

    def _glob(self, pattern: str) -> list[FileRef]:
        refs = []
        for match in glob.glob(os.path.expanduser(pattern), recursive=True):
            try:
                st = os.stat(match)
            except OSError:  # vanished or a broken symlink
                continue
            if stat.S_ISREG(st.st_mode):
                refs.append(FileRef(os.path.abspath(match), st.st_size, st.st_mtime))
        return refs

    def open(self, ref: FileRef) -> BinaryIO:
        """Open a local file (buffered, seekable)."""
        try:
            handle = open(ref.path, "rb", buffering=LOCAL_BUFFER)  # noqa: SIM115 - returned
        except FileNotFoundError:
            raise FileVanishedError(ref) from None
        except OSError as exc:
            raise BrazeCsvError(f"{ref.uri}: cannot be read ({exc.strerror})") from None
        st = os.fstat(handle.fileno())
        try:
            check_unchanged(ref, st.st_size, st.st_mtime)
        except BrazeCsvError:
            handle.close()
            raise
        return handle


# --------------------------------------------------------------------------------------------
# SFTP settings, keys and host keys


@dataclass(frozen=True)
class SftpSettings:
    """The `sftp` setting, validated. Secrets are kept out of `repr`."""

    host: str
    username: str
    port: int = 22
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)
    known_hosts: str | None = field(default=None, repr=False)
    allow_unknown_host_key: bool = False
    timeout: float = 30.0
    retries: int = 3
    retry_wait: float = 1.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SftpSettings:
        """Validate the `sftp` object of the tap config."""
        host = cfg.get("host")
        username = cfg.get("username")
        if not host:
            raise BrazeCsvError("sftp.host is required when sftp is set")
        if not username:
            raise BrazeCsvError(f"sftp.username is required to connect to {host}")
        if not cfg.get("password") and not cfg.get("private_key"):
            raise BrazeCsvError(
                f"sftp: set sftp.password or sftp.private_key to log in to {host} as {username}"
            )
        port = int(_number(cfg, "port", 22, int, lambda v: 0 < v < 65536, "1-65535"))
        timeout = _number(cfg, "timeout", 30.0, float, lambda v: v > 0, "> 0")
        retries = int(_number(cfg, "retries", 3, int, lambda v: v >= 0, ">= 0"))
        retry_wait = _number(cfg, "retry_wait", 1.0, float, lambda v: v >= 0, ">= 0")
        allow = cfg.get("allow_unknown_host_key", False)
        if isinstance(allow, str):
            allow = allow.strip().lower() in {"1", "true", "yes", "on"}
        return cls(
            host=str(host),
            username=str(username),
            port=port,
            password=cfg.get("password") or None,
            private_key=cfg.get("private_key") or None,
            private_key_passphrase=cfg.get("private_key_passphrase") or None,
            known_hosts=cfg.get("known_hosts") or None,
            allow_unknown_host_key=bool(allow),
            timeout=timeout,
            retries=retries,
            retry_wait=retry_wait,
        )


def _number(
    cfg: Mapping[str, Any],
    key: str,
    default: float,
    kind: type[int] | type[float],
    ok: Callable[[float], bool],
    bound: str,
) -> float:
    """Read one numeric `sftp.` setting (None/absent -> default); errors name the setting."""
    value = cfg.get(key)
    if value is None or value == "":
        return default
    try:
        number = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or (kind is int and float(value) != number) or not ok(number):
        raise BrazeCsvError(f"sftp.{key} must be a number {bound}, got {value!r}")
    return number


def read_setting_file(value: str) -> str | None:
    """Read the file a one-line setting names; None when it names no readable file."""
    if "\n" in value or len(value) > 4096:
        return None
    path = Path(value.strip()).expanduser()
    try:
        return path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def normalise_key_text(text: str) -> str:
    """Undo what env vars and YAML do to pasted keys: escaped newlines, CRLF, outer blanks."""
    if "\\n" in text and "\n" not in text.strip():
        text = text.replace("\\n", "\n")
    return text.replace("\r\n", "\n").strip() + "\n"
