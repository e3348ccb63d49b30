"""Which source reads the configured `paths`: local files, SFTP, or object storage.

`make_source(config)` returns a `FileSource` (see `sources.py`): local files, or SFTP when the
config has a non-empty `sftp` object; `paths` entries that are object storage URLs go to their
bucket's filesystem (`cloud.py`). The SFTP client is imported only when `sftp` is configured,
and the fsspec filesystems only when a path names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

from tap_braze_csv.cloud import ObjectSource, url_scheme
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sources import FileRef, FileSource, LocalSource, SftpSettings

_SFTP_DEFAULTED = {"port", "allow_unknown_host_key", "timeout", "retries", "retry_wait"}


class RoutingSource(FileSource):
    """Sends object storage URLs to their filesystem, the rest to the local or SFTP source.

    Object sources (`s3://`, `gs://`, `az://`) are created on first use.
    """

    def __init__(self, base: FileSource, config: Mapping[str, Any]) -> None:
        self.base = base
        self.config = config
        self.objects: dict[str, FileSource] = {}

    def _for(self, path: str) -> FileSource:
        scheme = url_scheme(path)
        if scheme is None:
            return self.base
        if scheme not in self.objects:
            self.objects[scheme] = ObjectSource(scheme, self.config)
        return self.objects[scheme]

    def _find_one(self, pattern: str) -> list[FileRef]:
        source = self._for(pattern)
        return source._find_one(pattern)

    def _literal(self, path: str) -> FileRef | None:
        return self._for(path)._literal(path)

    def _glob(self, pattern: str) -> list[FileRef]:
        return self._for(pattern)._glob(pattern)

    def open(self, ref: FileRef) -> BinaryIO:
        """Open a file with the source it was listed by."""
        for source in self.objects.values():
            if ref.origin == getattr(source, "origin", None):
                return source.open(ref)
        return self.base.open(ref)

    def describe(self, pattern: str) -> str:
        """Show a pattern as its source does."""
        return self._for(pattern).describe(pattern)

    def close(self) -> None:
        """Close every source opened."""
        self.base.close()
        for source in self.objects.values():
            source.close()


def make_source(config: Mapping[str, Any]) -> FileSource:
    """Return the source of the configured `paths`.

    Local files, or SFTP when the config has a non-empty `sftp` object; `paths` entries that
    are object storage URLs are read from their bucket (see `tap_braze_csv.cloud`).
    """
    base = _file_source(config)
    if any(isinstance(p, str) and "://" in p for p in config.get("paths") or []):
        return RoutingSource(base, config)
    return base


def _file_source(config: Mapping[str, Any]) -> FileSource:
    """Return a LocalSource, or an SftpSource when the config has a non-empty `sftp` object."""
    sftp = config.get("sftp")
    if not sftp:
        return LocalSource()
    if not isinstance(sftp, Mapping):
        raise BrazeCsvError("sftp must be an object: {host, port, username, password, ...}")
    # Defaults alone (e.g. {"port": 22} filled in by an orchestrator) do not mean SFTP.
    chosen = {k for k, v in sftp.items() if v not in (None, "") and k not in _SFTP_DEFAULTED}
    if not chosen:
        return LocalSource()
    # Imported here: paramiko and cryptography cost ~0.5 s and ~20 MB at start-up, and a run
    # over local files never needs them.
    from tap_braze_csv.sftp import SftpSource

    return SftpSource(SftpSettings.from_config(sftp))
