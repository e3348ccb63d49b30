"""tap-lytics-audience: the Tap class and its settings."""

from __future__ import annotations

import signal
import sys
import typing as t

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import EMIT_ACTIVATE_VERSION_CONFIG, TapCapabilities

from tap_lytics_audience.client import AudienceScanFailed
from tap_lytics_audience.common.config_numbers import coerce_number_strings
from tap_lytics_audience.common.orjson_writer import OrjsonWriter
from tap_lytics_audience.common.retries import DESCRIPTIONS as RETRY_DESCRIPTIONS
from tap_lytics_audience.common.secrets import header_secret_errors, strip_secrets
from tap_lytics_audience.scan import ScanLedger
from tap_lytics_audience.streams import (
    MEMBER_BASE_FIELDS,
    AudienceMembersStream,
    AudienceSnapshotsStream,
    AudiencesStream,
)

if t.TYPE_CHECKING:
    from types import FrameType


class TapLyticsAudience(Tap):
    """Streams Lytics audiences and their members."""

    name = "tap-lytics-audience"
    message_writer_class = OrjsonWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Lytics API token, sent as the raw `Authorization` header.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.lytics.io",
            description="Lytics API base URL.",
        ),
        th.Property(
            "audiences",
            th.ArrayType(th.StringType),
            description=(
                "Audience slugs or ids whose members are scanned (fully, on every run). "
                "Empty or unset: no member scan, only the `audiences` stream. An unknown "
                "slug or id is a configuration error listing the available slugs."
            ),
        ),
        th.Property(
            "external_id_field",
            th.StringType,
            default="braze_id",
            description="Lytics profile field holding the Braze external id.",
        ),
        th.Property(
            "fields",
            th.ArrayType(th.StringType),
            description="Extra profile fields copied into member records.",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=100,
            description="Members per scan page (`limit`), 1 to 100.",
        ),
        th.Property(
            "prefetch_pages",
            th.IntegerType,
            default=4,
            description=(
                "Scan pages buffered ahead per running scan while records are emitted "
                "(bounded memory). 0 with `scan_concurrency` 1 = one page at a time in the "
                "main thread, as the plain SDK does."
            ),
        ),
        th.Property(
            "scan_concurrency",
            th.IntegerType,
            default=3,
            description=(
                "Audiences scanned at the same time (their records are interleaved; each "
                "audience's snapshot still follows all of its records)."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=5,
            description=RETRY_DESCRIPTIONS["max_retries"],
        ),
        th.Property(
            "max_rate_limit_retries",
            th.IntegerType,
            default=30,
            description=RETRY_DESCRIPTIONS["max_rate_limit_retries"],
        ),
        th.Property(
            "retry_backoff_base",
            th.NumberType(minimum=0),
            default=1.0,
            description=RETRY_DESCRIPTIONS["retry_backoff_base"],
        ),
        th.Property(
            "retry_backoff_max",
            th.NumberType(minimum=0),
            default=60.0,
            description=RETRY_DESCRIPTIONS["retry_backoff_max"],
        ),
        th.Property(
            "request_timeout",
            th.NumberType(minimum=0),
            default=60,
            description=(
                "Seconds to wait for the server to accept a connection, then for each part of its answer (a timeout per wait, not a limit on the whole request)."
            ),
        ),
        th.Property(
            "max_scan_restarts",
            th.IntegerType,
            default=3,
            description=(
                "Times one audience's scan restarts from the start after Lytics reports an "
                "expired scan cursor, before the run fails."
            ),
        ),
        th.Property(
            "progress_every_pages",
            th.IntegerType,
            default=100,
            description="Log scan progress every N pages.",
        ),
    ).to_dict()

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add the SDK's built-in settings, plus `emit_activate_version_messages`.

        singer-sdk 0.54.9 reads that setting when `activate-version` is declared but does not
        advertise it, so `--about` and Meltano did not know it.
        """
        super().append_builtin_config(config_jsonschema)
        if TapCapabilities.ACTIVATE_VERSION in cls.capabilities:
            for name, prop in EMIT_ACTIVATE_VERSION_CONFIG["properties"].items():
                config_jsonschema["properties"].setdefault(
                    name,
                    {
                        **prop,
                        "description": (
                            "Emit `ACTIVATE_VERSION` messages for the full-snapshot streams (`audience_members`, "
                            "`audience_snapshots`): a target that processes them drops rows of earlier runs, "
                            "e.g. members who left."
                        ),
                    },
                )

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.ledger = ScanLedger()
        self.segments_cache: list[dict] | None = None
        super().__init__(*args, **kwargs)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Validate the schema plus the checks JSON schema cannot express.

        A token read from a mounted secret file ends with a newline: surrounding whitespace
        is removed here, where the config is loaded, so no header, log line or traceback
        can ever carry the raw value. What is left must be a valid header value. Number
        settings given as strings (Meltano env vars) are parsed.
        """
        self._config = strip_secrets(self._config, self.config_jsonschema)
        self._config, numbers = coerce_number_strings(self._config, self.config_jsonschema)
        if numbers and raise_errors:
            raise ConfigValidationError(numbers[0], errors=numbers)
        errors = [*numbers, *super()._validate_config(raise_errors=raise_errors)]
        extra: list[str] = header_secret_errors(self.config, ["api_token"])
        page_size = self.config.get("page_size", 100)
        if not isinstance(page_size, int) or not 1 <= page_size <= 100:
            extra.append(f"Setting `page_size` must be between 1 and 100 (got {page_size!r}).")
        clash = sorted(set(self.config.get("fields") or []) & set(MEMBER_BASE_FIELDS))
        if clash:
            extra.append(
                f"Setting `fields` may not contain {', '.join(clash)}: these names are "
                "member record fields set by the tap."
            )
        if not str(self.config.get("external_id_field", "braze_id")).strip():
            extra.append("Setting `external_id_field` must not be empty.")
        if extra and raise_errors:
            raise ConfigValidationError(extra[0], errors=extra)
        return [*errors, *extra]

    # The SDK marks sync_all final but offers no hook after the last stream; the override
    # only adds a check after the SDK's own sync_all, which runs unchanged.
    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync every stream; then fail when an audience got no trustworthy snapshot.

        Other audiences are scanned and their snapshots emitted first, so one bad audience
        does not hold back the rest.
        """
        super().sync_all()
        if self.ledger.failures:
            msg = "; ".join(self.ledger.failures)
            raise AudienceScanFailed(msg)

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run the tap; a failed audience scan exits 1 with one clear log line."""
        try:
            super().invoke(*args, **kwargs)
        except AudienceScanFailed as exc:
            cls.logger.error("Run failed: %s", exc)
            sys.exit(1)

    def discover_streams(self) -> list[Stream]:
        """Audiences, member scans, then completion snapshots (synced in this order)."""
        return [
            AudiencesStream(self),
            AudienceMembersStream(self),
            AudienceSnapshotsStream(self),
        ]

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:  # pragma: no cover
        """On SIGTERM/SIGINT: write state, flush, exit 128+signum (the SDK exits 0).

        An interrupted run did not finish, so the orchestrator must not treat it as a
        success; no snapshot is emitted (snapshots follow every finished member scan). When
        the signal lands while a message is being written, the exit waits for that line.
        """
        writer = getattr(self, "message_writer", None)
        if isinstance(writer, OrjsonWriter) and writer.writing:
            writer.deferred = lambda: self._terminate(signum)
            return
        self._terminate(signum)

    def _terminate(self, signum: int) -> None:
        self.logger.warning(
            "Interrupted by signal %d: stopping; audiences whose scan did not finish get no snapshot.",
            signum,
        )
        try:
            self.state_writer.write_state(self.state)
            sys.stdout.flush()
        finally:
            sys.exit(128 + signum if signum in (signal.SIGTERM, signal.SIGINT) else 1)


if __name__ == "__main__":
    TapLyticsAudience.cli()
