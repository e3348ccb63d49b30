"""Open what Braze delivers: CSV, zip of CSVs, gzip, any of them PGP-encrypted.

`iter_csv_members(ref, raw, config)` yields `(member, text stream)` pairs: member is "" for a
plain or gzipped CSV and the zip member's name for zips. Everything streams: zips are read in
place when the input is seekable (local files) and otherwise spooled to an anonymous temporary
file; PGP files are decrypted by `gpg` (python-gnupg) into a private temporary directory that is
removed afterwards. Failures, including ones that only show up mid-read (a CRC mismatch at the
end of a zip member, a truncated gzip, bytes that the `encoding` setting cannot decode), become
`TextReadError`s (a `BrazeCsvError`) that name the file and member. Key material and passphrases never reach messages, logs or file names.

Close the generator (`contextlib.closing`) if you stop before the end, so temporary files go.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import logging
import os
import posixpath
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sources import FileRef, normalise_key_text

logger = logging.getLogger(__name__)

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
ZIP_SUFFIXES = (".zip",)
GZIP_SUFFIXES = (".gz", ".gzip")
CSV_ENCODING = "utf-8-sig"
SPOOL_CHUNK = 1024 * 1024

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_ARMOR_MAGIC = b"-----BEGIN PGP MESSAGE"


class _DropSecretsFromGnupgLogs(logging.Filter):
    """python-gnupg logs the first 256 characters of imported key data at DEBUG: drop those."""

    _LEAKY = ("import_keys: ", "scan_keys: ", "chunk: ", "verify_data: ")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        return not (isinstance(msg, str) and msg.startswith(self._LEAKY))


_gnupg_logger = logging.getLogger("gnupg")
if not any(isinstance(f, _DropSecretsFromGnupgLogs) for f in _gnupg_logger.filters):
    _gnupg_logger.addFilter(_DropSecretsFromGnupgLogs())


def iter_csv_members(
    ref: FileRef, raw: BinaryIO, config: Mapping[str, Any]
) -> Iterator[tuple[str, TextIO]]:
    """Yield (member name, text stream) for each CSV inside one input file.

    Text streams are opened with the `encoding` setting (default UTF-8, BOM dropped) and
    `newline=""` (ready for `csv.reader`); they are closed when the next member is yielded or
    the generator ends.
    """
    encoding = text_encoding(config)
    with contextlib.ExitStack() as stack:
        name = posixpath.basename(ref.path)
        kind = _kind(name, raw)
        if kind == "pgp":
            raw = stack.enter_context(_decrypted(ref, raw, config))
            name = _strip_suffix(name, PGP_SUFFIXES)
            kind = _kind(name, raw)
            if kind == "pgp":
                raise BrazeCsvError(f"{ref.uri}: is encrypted twice (PGP inside PGP)")
        if kind == "zip":
            yield from _zip_members(ref, raw, stack, encoding)
        elif kind == "gzip":
            gz = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
            yield "", _guarded_text(ref, "", gz, encoding)
        else:
            yield "", _guarded_text(ref, "", raw, encoding)


def text_encoding(config: Mapping[str, Any]) -> str:
    """Return the codec for CSV text: the `encoding` setting, UTF-8 (BOM dropped) by default.

    UTF-8 under any spelling is read as `utf-8-sig`, so a BOM never ends up in the first
    header. An unknown codec is an error naming the setting.
    """
    wanted = config.get("encoding") or CSV_ENCODING
    try:
        name = codecs.lookup(str(wanted)).name
    except LookupError:
        raise BrazeCsvError(
            f"encoding: unknown text encoding {wanted!r} (e.g. utf-8, latin-1, cp1252, utf-16)"
        ) from None
    return CSV_ENCODING if name in ("utf-8", "utf-8-sig") else name


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _peek(raw: BinaryIO, n: int) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        try:
            return bytes(peek(n)[:n])
        except (OSError, ValueError):
            return b""
    if raw.seekable():
        pos = raw.tell()
        head = raw.read(n)
        raw.seek(pos)
        return head
    return b""


def _kind(name: str, raw: BinaryIO) -> str:
    """Tell what a file is ("zip", "gzip", "pgp" or "csv") from its first bytes, else its name."""
    head = _peek(raw, len(_ARMOR_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ARMOR_MAGIC):
        return "pgp"
    lower = name.lower()
    if lower.endswith(PGP_SUFFIXES):
        return "pgp"
    if lower.endswith(ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(GZIP_SUFFIXES):
        return "gzip"
    return "csv"


def _where(ref: FileRef, member: str) -> str:
    return f"{ref.uri} (zip member {member})" if member else ref.uri


# --------------------------------------------------------------------------------------------
# Text streams that turn mid-read failures into BrazeCsvError


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, OSError)


class TextReadError(BrazeCsvError):
    """A failure while reading a file's text (bad bytes for the encoding, corrupt data).

    `where` names the file (and zip member) and `problem` says what is wrong, so a reader
    that knows the line can say where it happened.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class _GuardedText:
    """A text stream whose read errors (corrupt zip/gzip data, undecodable bytes) name the file.

    Iteration delegates to the underlying TextIOWrapper with `yield from`, so `csv.reader`
    reads lines at C speed.
    """

    def __init__(self, inner: io.TextIOWrapper, where: str) -> None:
        self._inner = inner
        self.where = where

    def _error(self, exc: BaseException) -> TextReadError:
        return TextReadError(self.where, _read_problem(exc, self._inner.encoding))

    @property
    def name(self) -> str:
        return self.where

    @property
    def encoding(self) -> str:
        return self._inner.encoding

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        try:
            return self._inner.read(size)
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def readline(self, size: int = -1) -> str:
        try:
            return self._inner.readline(size)
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def __iter__(self) -> Iterator[str]:
        return self._lines()

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _lines(self) -> Iterator[str]:
        try:
            yield from self._inner
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()

    def __enter__(self) -> _GuardedText:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_problem(exc: BaseException, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        shown = "UTF-8" if encoding == CSV_ENCODING else encoding
        bad = bytes(exc.object[exc.start : exc.start + 1]).hex()
        return (
            f"is not {shown} text ({exc.reason}: byte 0x{bad}); "
            "set `encoding` to the file's encoding (e.g. latin-1, cp1252)"
        )
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, EOFError):
        return "truncated: the data ends before its end marker"
    if isinstance(exc, zipfile.BadZipFile):
        return f"corrupt or truncated zip data ({exc})"
    return f"read error ({type(exc).__name__}: {exc})"


def _guarded_text(ref: FileRef, member: str, binary: BinaryIO, encoding: str) -> TextIO:
    text = io.TextIOWrapper(cast(Any, binary), encoding=encoding, newline="", write_through=False)
    return cast(TextIO, _GuardedText(text, _where(ref, member)))


# --------------------------------------------------------------------------------------------
# Zip


def _is_junk(name: str) -> bool:
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or "/__MACOSX/" in name or base.startswith("._")


def _seekable_copy(ref: FileRef, raw: BinaryIO, stack: contextlib.ExitStack) -> BinaryIO:
    """Return the input itself when seekable, else an anonymous temporary copy of it."""
    try:
        if raw.seekable():
            return raw
    except (AttributeError, ValueError, OSError):
        pass
    spool = stack.enter_context(tempfile.TemporaryFile(prefix="tap-braze-csv-"))  # noqa: SIM115
    try:
        shutil.copyfileobj(raw, spool, SPOOL_CHUNK)
    except BrazeCsvError:
        raise
    except OSError as exc:
        raise BrazeCsvError(f"{ref.uri}: could not be copied to a temporary file ({exc})") from None
    spool.seek(0)
    return cast(BinaryIO, spool)


def _zip_members(
    ref: FileRef, raw: BinaryIO, stack: contextlib.ExitStack, encoding: str
) -> Iterator[tuple[str, TextIO]]:
    archive = _open_zip(ref, raw, stack)
    for info in _csv_members(ref, archive):
        member = _open_member(ref, archive, info)
        text = _guarded_text(ref, info.filename, member, encoding)
        try:
            yield info.filename, text
        finally:
            text.close()


def _open_zip(ref: FileRef, raw: BinaryIO, stack: contextlib.ExitStack) -> zipfile.ZipFile:
    """Open ``raw`` as a zip archive (from a seekable copy when it is not seekable)."""
    source = _seekable_copy(ref, raw, stack)
    try:
        return stack.enter_context(zipfile.ZipFile(source))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise BrazeCsvError(
            f"{ref.uri}: is not a readable zip file: truncated or corrupt ({exc})"
        ) from None


def _csv_members(ref: FileRef, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Return the archive's .csv members by name; fail naming what it holds when there is none."""
    files = [
        info for info in archive.infolist() if not info.is_dir() and not _is_junk(info.filename)
    ]
    members = sorted(
        (info for info in files if info.filename.lower().endswith(".csv")),
        key=lambda info: info.filename,
    )
    if not members:
        listed = ", ".join(info.filename for info in files[:10]) or "nothing"
        raise BrazeCsvError(f"{ref.uri}: the zip holds no .csv file (it holds: {listed})")
    return members


def _open_member(ref: FileRef, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> BinaryIO:
    """Open one member, refusing encrypted ones and naming a corrupt one."""
    where = _where(ref, info.filename)
    if info.flag_bits & 0x1:
        raise BrazeCsvError(f"{where}: is password-protected; zip encryption is not supported")
    try:
        return cast(BinaryIO, archive.open(info))
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, zlib.error) as exc:
        raise BrazeCsvError(f"{where}: cannot be opened: corrupt or truncated ({exc})") from None


# --------------------------------------------------------------------------------------------
# PGP


class _RecordingReader(io.RawIOBase):
    """Pass reads through, keeping the first error: python-gnupg's feeder thread swallows them."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _pgp_key_data(config: Mapping[str, Any]) -> bytes | str | None:
    value = config.get("pgp_private_key")
    if not value:
        return None
    if "-----BEGIN PGP" in value:
        return normalise_key_text(str(value))
    if "\n" not in value and len(value) < 4096:
        path = Path(value.strip()).expanduser()
        with contextlib.suppress(OSError, ValueError):
            if path.is_file():
                return path.read_bytes()  # armoured or binary
    raise BrazeCsvError(
        "pgp_private_key is neither an armoured PGP private key "
        "(-----BEGIN PGP PRIVATE KEY BLOCK-----) nor the path of a readable key file"
    )


#: gpg-agent's sockets live in GNUPGHOME and a Unix socket path must fit in 108 bytes
_MAX_GNUPG_BASE = 64


def _gnupg_base() -> str:
    """Return a temporary directory short enough for gpg-agent's socket paths."""
    base = tempfile.gettempdir()
    if len(base) <= _MAX_GNUPG_BASE:
        return base
    for candidate in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return base


def _stop_agent(home: str) -> None:
    gpgconf = shutil.which("gpgconf")
    if gpgconf:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [gpgconf, "--homedir", home, "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
                timeout=30,
            )


@contextlib.contextmanager
def _decrypted(ref: FileRef, raw: BinaryIO, config: Mapping[str, Any]) -> Iterator[BinaryIO]:
    """Decrypt a PGP file into a private temporary directory; yield the plaintext file."""
    import gnupg  # deferred: only PGP inputs need it

    key_data = _pgp_key_data(config)
    if key_data is None:
        raise BrazeCsvError(f"{ref.uri}: is PGP-encrypted but pgp_private_key is not set")
    passphrase = config.get("pgp_passphrase") or None
    home = tempfile.mkdtemp(prefix="tap-braze-csv-gpg-", dir=_gnupg_base())
    os.chmod(home, 0o700)
    try:
        # gpg-agent re-protects an imported key with a passphrase KDF calibrated on the spot
        # (seconds on a busy machine, for every file). This keyring is private and deleted
        # right after, so a minimal count costs no security and makes decryption ~10x faster.
        Path(home, "gpg-agent.conf").write_text("s2k-count 65536\n")
        try:
            gpg = gnupg.GPG(gnupghome=home)
        except (OSError, ValueError, RuntimeError):
            raise BrazeCsvError(
                f"{ref.uri}: is PGP-encrypted; decrypting it needs the gpg program (GnuPG), "
                "which could not be run (install gnupg)"
            ) from None
        imported = gpg.import_keys(key_data, passphrase=passphrase)
        if not imported.sec_imported:
            raise BrazeCsvError(
                "pgp_private_key holds no PGP private key (a public key cannot decrypt); "
                f"needed for {ref.uri}"
            )
        fingerprints = ", ".join(sorted(set(imported.fingerprints)))
        plaintext = os.path.join(home, "plaintext")
        feeder = _RecordingReader(raw)
        result = gpg.decrypt_file(
            feeder, passphrase=passphrase, output=plaintext, always_trust=True
        )
        if feeder.error is not None:
            if isinstance(feeder.error, BrazeCsvError):
                raise feeder.error
            raise BrazeCsvError(
                f"{ref.uri}: read error while decrypting ({type(feeder.error).__name__}: "
                f"{feeder.error})"
            )
        if not result.ok or result.returncode not in (0, None):
            raise BrazeCsvError(_decrypt_failure(ref, result, fingerprints, passphrase))
        logger.debug("Decrypted %s with key %s", ref.uri, fingerprints)
        with open(plaintext, "rb") as handle:
            yield cast(BinaryIO, handle)
    finally:
        _stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def _decrypt_failure(ref: FileRef, result: Any, fingerprints: str, passphrase: str | None) -> str:
    """Say why gpg could not decrypt ``ref``, from its status and ``--status-fd`` lines."""
    status = str(result.status or "")
    stderr = str(result.stderr or "")
    problem = _not_encrypted_for_a_key(status, stderr, fingerprints) or _key_problem(
        status, stderr, fingerprints, result.key_id, passphrase
    )
    if problem:
        return f"{ref.uri}: {problem}"
    return (
        f"{ref.uri}: PGP decryption failed ({status or 'gpg error'}); the file is probably "
        "truncated or corrupt"
    )


def _not_encrypted_for_a_key(status: str, stderr: str, fingerprints: str) -> str | None:
    """Say so when the file is no OpenPGP data, signed or stored only, or passphrase-only."""
    if status == "no data was provided" or "no valid OpenPGP data" in stderr:
        return "is not a PGP-encrypted file (no OpenPGP data found)"
    kind = _unencrypted_kind(stderr)
    if kind:
        return (
            f"is a {kind} PGP file but not encrypted: have it encrypted for the "
            f"public key of pgp_private_key (key {fingerprints}), or export it unencrypted "
            "without the .pgp/.gpg/.asc extension"
        )
    if "NEED_PASSPHRASE_SYM" in stderr and "ENC_TO" not in stderr:
        return (
            "is encrypted with a passphrase only (gpg --symmetric), not for a key: "
            f"have it encrypted for the public key of pgp_private_key (key {fingerprints})"
        )
    return None


def _unencrypted_kind(stderr: str) -> str | None:
    """Return "signed" or "stored (gpg --store)" when gpg read OpenPGP data it did not decrypt."""
    encrypted = "ENC_TO" in stderr or "BEGIN_DECRYPTION" in stderr or "NEED_PASSPHRASE" in stderr
    if encrypted or not ("PLAINTEXT" in stderr or "NEWSIG" in stderr):
        return None
    # gpg read the OpenPGP data without decrypting anything: signed-only or `gpg --store`d.
    return "signed" if "NEWSIG" in stderr else "stored (gpg --store)"


def _key_problem(
    status: str, stderr: str, fingerprints: str, key_id: Any, passphrase: str | None
) -> str | None:
    """Say so when the file is encrypted for a key that pgp_private_key cannot open."""
    if "Bad passphrase" in stderr:
        return f"pgp_passphrase is wrong for pgp_private_key (key {fingerprints})"
    if status == "no secret key" or "NO_SECKEY" in stderr:
        return (
            f"is encrypted for PGP key {key_id or '(unknown)'}, which "
            f"pgp_private_key (key {fingerprints}) cannot decrypt: wrong pgp_private_key"
        )
    if "pkdecrypt_failed" in stderr:
        if passphrase is None:
            return (
                f"pgp_private_key (key {fingerprints}) is passphrase-protected: set pgp_passphrase"
            )
        return f"pgp_private_key (key {fingerprints}) could not decrypt the file"
    return None
