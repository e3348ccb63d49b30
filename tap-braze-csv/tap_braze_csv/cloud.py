"""Input files in object storage (S3, Google Cloud Storage, Azure Blob/ADLS) through fsspec.

`paths` entries such as ``s3://bucket/segment-export/*/*/*.zip``, ``gs://bucket/exports/**`` or
``az://container/exports/*.zip`` are listed and streamed with the fsspec filesystem of their
scheme: s3fs, gcsfs or adlfs, installed as the package extras ``[s3]``, ``[gcs]``, ``[azure]``.

Credentials come from the ``s3`` / ``gcs`` / ``azure`` settings when given, else from the
cloud's usual chain (environment variables, profiles and config files, instance or workload
roles). For S3-compatible stores ``s3.endpoint_url`` or the standard ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` environment variables name the endpoint.

Other code (e.g. the REST export reading what Braze wrote under an ``object_prefix``) uses
:func:`object_source` and then ``source.list_prefix(url)`` / ``source.open(ref)``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.sources import FileRef, FileSource, FileVanishedError

logger = logging.getLogger(__name__)

#: URL scheme -> (fsspec protocol, Python module, package extra, settings group)
SCHEMES: dict[str, tuple[str, str, str, str]] = {
    "s3": ("s3", "s3fs", "s3", "s3"),
    "s3a": ("s3", "s3fs", "s3", "s3"),
    "gs": ("gcs", "gcsfs", "gcs", "gcs"),
    "gcs": ("gcs", "gcsfs", "gcs", "gcs"),
    "az": ("abfs", "adlfs", "azure", "azure"),
    "abfs": ("abfs", "adlfs", "azure", "azure"),
    "abfss": ("abfs", "adlfs", "azure", "azure"),
}
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
#: Bytes fetched per ranged GET; reads stream in blocks of this size (memory stays flat).
BLOCK_SIZE = 8 * 1024 * 1024

#: Braze's key layout for dashboard CSV exports written to the workspace's S3 bucket.
_BRAZE_KEY = re.compile(r"(?:^|/)segment-export/(?P<segment>[^/]+)/\d{4}-\d{2}-\d{2}/[^/]+$")


def braze_segment_id(uri: str) -> str | None:
    """Segment id from Braze's key layout ``segment-export/<id>/<YYYY-MM-dd>/users-<x>.zip``."""
    match = _BRAZE_KEY.search(uri)
    return match.group("segment") if match else None


def url_scheme(path: str) -> str | None:
    """Return the object storage scheme of a `paths` entry (``s3``, ``gs``, ...), None for files."""
    match = _URL.match(path)
    if not match:
        return None
    scheme = match.group("scheme").lower()
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise BrazeCsvError(
            f"paths: {path!r}: unsupported scheme {scheme}:// (supported: {supported}, "
            "or a local/SFTP path)"
        )
    return scheme


def _clean(group: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (group or {}).items() if v not in (None, "")}


def filesystem_options(scheme: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the fsspec filesystem of ``scheme`` from the tap settings.

    Only settings that are set are passed: anything missing is left to the cloud library's
    own credential chain.
    """
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    protocol = SCHEMES[scheme][0]
    if protocol == "s3":
        options.update(_s3_options(_clean(config.get("s3"))))
    elif protocol == "gcs":
        options.update(_gcs_options(_clean(config.get("gcs"))))
    else:
        options.update(_azure_options(_clean(config.get("azure"))))
    return options


#: ``s3`` setting -> s3fs keyword, passed when the setting is set.
_S3_CREDENTIALS = {
    "aws_access_key_id": "key",
    "aws_secret_access_key": "secret",
    "aws_session_token": "token",
    "profile": "profile",
}


def _s3_options(s3: Mapping[str, Any]) -> dict[str, Any]:
    """Return s3fs keywords: endpoint and region, credentials, block size, bounded retries."""
    options: dict[str, Any] = {}
    endpoint = (
        s3.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    client: dict[str, Any] = {}
    if endpoint:
        client["endpoint_url"] = endpoint
    if s3.get("region_name"):
        client["region_name"] = s3["region_name"]
    if client:
        options["client_kwargs"] = client
    options.update({kw: s3[key] for key, kw in _S3_CREDENTIALS.items() if s3.get(key)})
    if s3.get("anon"):
        options["anon"] = True
    options["default_block_size"] = BLOCK_SIZE
    # Bounded retries: botocore's standard mode (3 attempts, backoff) instead of legacy.
    options["config_kwargs"] = {
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    return options


def _gcs_options(gcs: Mapping[str, Any]) -> dict[str, Any]:
    """Return gcsfs keywords: token, project, endpoint, block size."""
    options: dict[str, Any] = {}
    if gcs.get("token"):
        options["token"] = _gcs_token(str(gcs["token"]))
    if gcs.get("project"):
        options["project"] = gcs["project"]
    if gcs.get("endpoint_url"):
        options["endpoint_url"] = gcs["endpoint_url"]
    options["block_size"] = BLOCK_SIZE
    return options


def _gcs_token(token: str) -> Any:
    """Return a service account key pasted as JSON text parsed, or a path (gcsfs reads it)."""
    if not token.lstrip().startswith("{"):
        return token
    try:
        return json.loads(token)
    except ValueError:
        raise BrazeCsvError(
            "gcs.token is neither a service account key (JSON) nor a file path"
        ) from None


#: ``azure`` settings passed to adlfs as they are, when set.
_AZURE_KEYS = (
    "account_name",
    "account_key",
    "connection_string",
    "sas_token",
    "tenant_id",
    "client_id",
    "client_secret",
)


def _azure_options(azure: Mapping[str, Any]) -> dict[str, Any]:
    """Return adlfs keywords: the credentials given (else DefaultAzureCredential), block size."""
    options: dict[str, Any] = {key: azure[key] for key in _AZURE_KEYS if azure.get(key)}
    keyed = any(k in azure for k in ("account_key", "connection_string", "sas_token"))
    if not keyed and not (azure.get("client_id") and azure.get("client_secret")):
        # No key given: adlfs then uses DefaultAzureCredential (env, managed identity).
        options["anon"] = False
    options["blocksize"] = BLOCK_SIZE
    return options


def _mtime(info: Mapping[str, Any]) -> float:
    for key in ("LastModified", "last_modified", "mtime", "updated", "creation_time"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.timestamp()
    return 0.0


def _etag(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "content_md5"):
        value = info.get(key)
        if value:
            if isinstance(value, (bytes, bytearray)):
                value = value.hex()
            return str(value).strip('"')
    return ""


class ObjectSource(FileSource):
    """Objects of one scheme (S3, GCS or Azure); paths are fsspec paths without the scheme."""

    def __init__(self, scheme: str, config: Mapping[str, Any]) -> None:
        protocol, module, extra, _group = SCHEMES[scheme]
        self.scheme = scheme
        try:
            importlib.import_module(module)
        except ImportError:
            raise BrazeCsvError(
                f"paths: reading {scheme}:// needs the {module} package: "
                f"pip install 'tap-braze-csv[{extra}]'"
            ) from None
        import fsspec

        try:
            self.fs = fsspec.filesystem(protocol, **filesystem_options(scheme, config))
        except BrazeCsvError:
            raise
        except Exception as exc:  # e.g. adlfs without an account name
            raise BrazeCsvError(
                f"{scheme}://: cannot set up the client ({type(exc).__name__}: {exc})"
            ) from None
        self.origin = f"{scheme}://"

    def __repr__(self) -> str:
        return f"ObjectSource({self.scheme}://)"

    def _strip(self, url: str) -> str:
        match = _URL.match(url)
        return match.group("rest") if match else url

    def describe(self, pattern: str) -> str:
        """Show a pattern as in messages (with its scheme)."""
        return pattern if _URL.match(pattern) else f"{self.origin}{pattern}"

    def _ref(self, info: Mapping[str, Any]) -> FileRef:
        path = str(info.get("name") or info.get("Key") or "")
        return FileRef(
            path, int(info.get("size") or 0), _mtime(info), self.origin, etag=_etag(info)
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the filesystem; errors other than not-found become messages naming ``what``."""
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise BrazeCsvError(f"{what}: access denied ({_short(exc)})") from None
        except (OSError, ValueError) as exc:
            raise BrazeCsvError(f"{what}: {_short(exc)}") from None
        except Exception as exc:  # botocore / google / azure client errors
            raise BrazeCsvError(f"{what}: {type(exc).__name__}: {_short(exc)}") from None

    def _literal(self, path: str) -> FileRef | None:
        key = self._strip(path)
        try:
            info = self._call(self.describe(path), self.fs.info, key)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            raise self._directory_error(self.describe(path))
        return self._ref(info)

    def _glob(self, pattern: str) -> list[FileRef]:
        key = self._strip(pattern)
        try:
            found = self._call(self.describe(pattern), self.fs.glob, key, detail=True)
        except FileNotFoundError:
            return []
        return [self._ref(info) for info in found.values() if info.get("type") != "directory"]

    def list_prefix(self, prefix: str) -> list[FileRef]:
        """Every object under a prefix (``s3://bucket/exports/run-1/``), recursively, by path."""
        key = self._strip(prefix).rstrip("/")
        try:
            found = self._call(self.describe(prefix), self.fs.find, key, detail=True)
        except FileNotFoundError:
            return []
        refs = [self._ref(info) for info in found.values() if info.get("type") != "directory"]
        return sorted(refs, key=lambda ref: ref.path)

    def open(self, ref: FileRef) -> BinaryIO:
        """Open an object for streaming reads (ranged GETs of BLOCK_SIZE, seekable).

        An object deleted since it was listed raises FileVanishedError; one replaced by other
        content (another ETag or size) is refused, as a local file that changed is.
        """
        try:
            handle = self._call(ref.uri, self.fs.open, ref.path, "rb")
        except FileNotFoundError:
            raise FileVanishedError(ref) from None
        details = getattr(handle, "details", None) or {}
        size = int(details.get("size", ref.size) or 0)
        etag = _etag(details) or ref.etag
        if size != ref.size or (ref.etag and etag != ref.etag):
            handle.close()
            raise BrazeCsvError(
                f"{ref.uri}: changed since it was listed (size {ref.size} -> {size}, "
                f"etag {ref.etag} -> {etag}); run again to read the new version"
            )
        return cast(BinaryIO, handle)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def object_source(url: str, config: Mapping[str, Any]) -> ObjectSource:
    """Return an ObjectSource for the scheme of ``url`` (``s3://...``), set up from the settings."""
    scheme = url_scheme(url)
    if scheme is None:
        raise BrazeCsvError(f"{url!r} is not an object storage URL (s3://, gs://, az://)")
    return ObjectSource(scheme, config)
