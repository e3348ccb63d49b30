"""target-lytics-users: the Target class and its settings."""

from __future__ import annotations

import functools
import sys
import typing as t

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.target_base import Target

from target_lytics_users.client import DEFAULT_RETRY, LyticsClient, LyticsError
from target_lytics_users.common.batch_files import BatchFileError, iter_batch_records
from target_lytics_users.common.config_numbers import coerce_number_strings
from target_lytics_users.common.input_lines import InputLineError
from target_lytics_users.common.retries import DESCRIPTIONS as RETRY_DESCRIPTIONS
from target_lytics_users.common.retries import RetryPolicy
from target_lytics_users.common.secrets import header_secret_errors, strip_secrets
from target_lytics_users.delivery import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    Delivery,
    DeliveryLimits,
)
from target_lytics_users.serialize import LyticsUsersReader, UnsupportedMessageError
from target_lytics_users.sinks import LyticsSink

if t.TYPE_CHECKING:
    from pathlib import PurePath
    from types import FrameType

    from singer_sdk.singerlib.encoding.base import GenericSingerReader
    from singer_sdk.sinks import Sink

#: The stream `meltano config <loader> test` pipes into a loader (one made-up record). It is
#: never sent: its SCHEMA triggers a connection check instead (see `check_connection`).
MELTANO_TEST_STREAM = "meltano_test_stream"

#: Singer streams loaded into a Lytics stream of their own unless `lytics_stream_map` says
#: otherwise (tap-braze-csv's engagement records).
OWN_STREAMS: dict[str, str] = {"braze_engagement": "braze_engagement"}
LYTICS_MAX_BYTES = 10 * 1024 * 1024


class TargetLyticsUsers(Target):
    """Loads user records into a Lytics stream through the collect API."""

    name = "target-lytics-users"
    default_sink_class = LyticsSink
    message_reader_class = LyticsUsersReader

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Lytics API token (Data Manager role), sent as the `Authorization` header.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.lytics.io",
            description="Lytics API base URL.",
        ),
        th.Property(
            "stream",
            th.StringType,
            default="braze_users",
            description="Lytics data stream the records are collected into.",
        ),
        th.Property(
            "timestamp_field",
            th.StringType,
            description="Record field Lytics reads the event time from (`timestamp_field`).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Pass `dryrun=true`: Lytics validates but stores nothing.",
        ),
        th.Property(
            "lytics_stream_map",
            th.ObjectType(additional_properties=th.StringType),
            description=(
                "Singer stream name -> Lytics stream name, e.g. "
                '`{"braze_users": "braze_users", "crm_contacts": "crm"}`. '
                "Streams not listed go to `stream`, except tap-braze-csv's "
                "`braze_engagement`, which goes to the Lytics stream `braze_engagement`."
            ),
        ),
        th.Property(
            "max_batch_records",
            th.IntegerType(minimum=1),
            default=5000,
            description=(
                "Most records per request. The SDK's `batch_size_rows`, when set, "
                "lowers it further."
            ),
        ),
        th.Property(
            "max_batch_bytes",
            th.IntegerType(minimum=1024, maximum=LYTICS_MAX_BYTES),
            default=DEFAULT_MAX_BATCH_BYTES,
            description=(
                "Most bytes per request body (the JSON array). Lytics takes up to 10 MB; "
                "the default 4 MB leaves headroom."
            ),
        ),
        th.Property(
            "max_record_bytes",
            th.IntegerType(minimum=256),
            default=DEFAULT_MAX_RECORD_BYTES,
            description=(
                "Largest record (compact JSON) sent: Lytics limits a single record within a "
                "batch to 16 KB. A larger record is reported (stream, id, input line, size) "
                "and skipped, counted in the summary; with `fail_on_rejected` the run stops "
                "instead (non-zero exit, no STATE past it)."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=8,
            description=RETRY_DESCRIPTIONS["max_retries"],
        ),
        th.Property(
            "max_rate_limit_retries",
            th.IntegerType(minimum=0),
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
            th.NumberType(minimum=1),
            default=120.0,
            description=(
                "Seconds to wait for the server to accept a connection, then for each part of its answer (a timeout per wait, not a limit on the whole request)."
            ),
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=16),
            default=2,
            description="Requests in flight at once; reading goes on while they are sent.",
        ),
        th.Property(
            "skip_oversized_records",
            th.BooleanType,
            default=False,
            description=(
                "A record larger than `max_batch_bytes` on its own is always logged as "
                "rejected (stream, key, input line). By default the run then exits non-zero "
                "and emits no STATE past it; `true` tolerates it: the run goes on and succeeds."
            ),
        ),
        th.Property(
            "fail_on_rejected",
            th.BooleanType,
            default=False,
            description=(
                "Stop the run (non-zero exit, no STATE past the batch) when Lytics reports "
                "`rejected_count` > 0 for a batch. By default rejections are logged and counted."
            ),
        ),
        th.Property(
            "max_record_age_seconds",
            th.NumberType(minimum=0),
            default=300,
            description=(
                "Once records have waited this long, every stream is drained (all bodies sent "
                "and accepted by Lytics) and the latest STATE is emitted: how often a long run "
                "saves its progress (the SDK's max record age, 5 minutes)."
            ),
        ),
    ).to_dict()

    #: SDK built-in target settings this target has no use for: the collect API only adds and
    #: merges, so `load_method` (append-only/upsert/overwrite) cannot be honoured.
    #: `batch_size_rows` (caps `max_batch_records`) and `add_record_metadata` (sends `_sdc_*`
    #: fields, dropped by default) work and stay.
    UNSUPPORTED_BUILTIN_SETTINGS = ("load_method",)

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add the SDK's built-in settings except those the target would silently ignore."""
        super().append_builtin_config(config_jsonschema)
        props = config_jsonschema["properties"]
        for name in cls.UNSUPPORTED_BUILTIN_SETTINGS:
            props.pop(name, None)
        if "add_record_metadata" in props:
            props["add_record_metadata"] = {
                **props["add_record_metadata"],
                "description": (
                    "Send metadata fields to Lytics: the SDK's `_sdc_*` (`_sdc_extracted_at`, "
                    "...) and the tap's `_sdc_source_*` (e.g. tap-braze-csv's "
                    "`_sdc_source_file`, a path on the runner). Off: they are dropped, they are "
                    "not profile data."
                ),
            }

    def __init__(
        self,
        *,
        config: dict | PurePath | str | list[PurePath | str] | None = None,
        parse_env_config: bool = False,
        validate_config: bool = True,
        setup_mapper: bool = True,
        message_reader: GenericSingerReader | None = None,
    ) -> None:
        """Set up the Lytics client, counters and failure tracking."""
        super().__init__(
            config=config,
            parse_env_config=parse_env_config,
            validate_config=validate_config,
            setup_mapper=setup_mapper,
            message_reader=message_reader,
        )
        cfg = self.config
        self.client = LyticsClient(
            api_url=cfg.get("api_url") or "https://api.lytics.io",
            api_token=cfg.get("api_token") or "",
            dry_run=bool(cfg.get("dry_run")),
            timestamp_field=cfg.get("timestamp_field"),
            timeout=float(cfg.get("request_timeout") or 120.0),
            retry=RetryPolicy.from_config(cfg, DEFAULT_RETRY),
            logger=self.logger,
        )
        self.delivery = Delivery(
            self.client,
            DeliveryLimits.from_config(cfg),
            dry_run=bool(cfg.get("dry_run")),
            line_number=lambda: int(getattr(self.message_reader, "line_number", 0)),
            logger=self.logger,
        )
        # The SDK's drain age (a class constant of 5 minutes), per run.
        self._MAX_RECORD_AGE_IN_MINUTES = float(cfg.get("max_record_age_seconds") or 300) / 60
        self._terminating = False
        self._in_endofpipe = False
        self._stream_map: dict[str, str] = dict(cfg.get("lytics_stream_map") or {})
        self._default_stream: str = cfg.get("stream") or "braze_users"
        self._versions_ignored: set[str | None] = set()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Strip secrets read from files (trailing newline) and check the token is a header value.

        Done where the config is loaded, so no header, log line or traceback can carry
        the raw value. Number settings given as strings (Meltano env vars) are parsed.
        """
        self._config = strip_secrets(self._config, self.config_jsonschema)
        self._config, numbers = coerce_number_strings(self._config, self.config_jsonschema)
        if numbers and raise_errors:
            raise ConfigValidationError(numbers[0], errors=numbers)
        errors = [*numbers, *super()._validate_config(raise_errors=raise_errors)]
        extra = header_secret_errors(self.config, ["api_token"])
        if extra and raise_errors:
            raise ConfigValidationError(extra[0], errors=extra)
        return [*errors, *extra]

    # Sinks ------------------------------------------------------------------------------

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """`LyticsSink` bound to this run's delivery coordinator.

        The SDK's `add_sink` (final) builds a sink from the target, stream name, schema and
        key properties only; the partial also hands it the `Delivery` and its Lytics stream,
        so the sink never reaches back into the target.
        """
        factory = functools.partial(
            LyticsSink, delivery=self.delivery, lytics_stream=self.lytics_stream_for(stream_name)
        )
        return t.cast("type[Sink]", factory)

    def lytics_stream_for(self, stream_name: str) -> str:
        """Lytics stream for a Singer stream.

        `lytics_stream_map` first; then the Singer streams with their own default Lytics
        stream (`braze_engagement`: campaign and Canvas engagement is not profile data, so it
        must not land in the users stream `stream` names); else `stream`.
        """
        mapped = self._stream_map.get(stream_name)
        if mapped:
            return mapped
        return OWN_STREAMS.get(stream_name, self._default_stream)

    # BATCH and ACTIVATE_VERSION messages ------------------------------------------------

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """Ignore ACTIVATE_VERSION, saying why once per stream."""
        stream = message_dict.get("stream")
        if stream not in self._versions_ignored:
            self._versions_ignored.add(stream)
            self.logger.warning(
                "ACTIVATE_VERSION of stream '%s' ignored: the Lytics collect API only adds and "
                "merges, so profiles missing from the new version are not deleted",
                stream,
            )

    def _process_batch_message(self, message_dict: dict) -> None:
        """Handle every record of a BATCH message's files exactly like a RECORD message.

        The SDK's own BATCH path handed whole files to `process_batch`, which this sink
        never read records from: they were dropped while the STATE after them was emitted.
        """
        self._assert_line_requires(message_dict, requires={"stream", "encoding", "manifest"})
        stream = message_dict["stream"]
        self._assert_sink_exists(stream)
        count = 0
        for record in iter_batch_records(message_dict):
            self._process_record_message({"type": "RECORD", "stream": stream, "record": record})
            count += 1
        self.logger.info(
            "BATCH of stream '%s' (input line %d): %d records read from %d file(s)",
            stream,
            self.delivery.line_number,
            count,
            len(message_dict["manifest"]),
        )

    # Meltano's `config test` ------------------------------------------------------------

    def check_connection(self) -> None:
        """Check token, URL and stream with a dry-run collect: Lytics stores nothing.

        `meltano config target-lytics-users test` pipes a made-up record into the loader;
        sending it would put it into the live stream.
        """
        stream = self._default_stream
        result = self.client.collect(
            stream, b"[{}]", label="the connection test (dry run)", dry_run=True
        )
        self.logger.info(
            "Connection test: Lytics accepted the token for stream '%s' at %s (HTTP %d, "
            "dryrun=true: nothing stored). Meltano's test record was not sent.",
            stream,
            self.client.api_url,
            result.status,
        )

    def _process_schema_message(self, message_dict: dict) -> None:
        if message_dict.get("stream") == MELTANO_TEST_STREAM:
            self.check_connection()
            return
        super()._process_schema_message(message_dict)

    def _process_record_message(self, message_dict: dict) -> None:
        if message_dict.get("stream") == MELTANO_TEST_STREAM:
            return  # Meltano's test record: checked at its SCHEMA, never sent
        super()._process_record_message(message_dict)

    # STATE and end of run ----------------------------------------------------------------

    def _drain_all(self, sink_list: t.Iterable[Sink], parallelism: int) -> None:
        """Drain sinks completely: `drain_all` (end of input, drain age, SIGTERM) writes STATE next.

        The flag tells `LyticsSink.process_batch` to send its partial body and wait for every
        answer, whatever else it holds.
        """
        self.delivery.draining_all = True
        try:
            super()._drain_all(sink_list, parallelism)
        finally:
            self.delivery.draining_all = False

    def _unconfirmed_records(self) -> int:
        """Count records read but not yet accepted by Lytics, over every sink."""
        sinks = [*self._sinks_to_clear, *self._sinks_active.values()]
        return sum(sink.current_size for sink in sinks)

    def _write_state_message(self, state: dict) -> None:
        """Emit STATE only when everything read before it was accepted by Lytics.

        The SDK calls this at the end of `drain_all` (end of input, the drain age, SIGTERM),
        after every sink's `process_batch` returned, i.e. after Lytics accepted every body;
        a failure raises before it. It is checked again here (records still held by a sink
        or a failed run hold STATE back). An oversized record that was not tolerated means
        the input position in this STATE was not fully delivered, so no STATE is written
        from then on.
        """
        if self.delivery.state_blocked is not None:
            self.logger.warning(
                "STATE not emitted: a record too large to send (%s) was not delivered.",
                self.delivery.state_blocked,
            )
            return
        unconfirmed = self._unconfirmed_records()
        if unconfirmed or self.delivery.failed:
            self.logger.warning(
                "STATE not emitted: %d records not yet accepted by Lytics%s.",
                unconfirmed,
                " (the run failed)" if self.delivery.failed else "",
            )
            return
        super()._write_state_message(state)

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: send what was read, emit STATE once Lytics accepted it, exit 128+N.

        The SDK drains right inside the signal handler, whatever the main thread was doing:
        in the middle of a sink's bookkeeping (a body sealed but not yet queued, an answer
        taken but not yet counted) such a drain could skip records and still write STATE.
        So while a message is being handled the drain waits until that message is done; while
        the target waits for input it runs at once. During the end-of-input drain the run just
        finishes.
        """
        _ = frame
        if self._terminating:
            return
        if self._in_endofpipe:
            self.logger.warning("Received signal %d: finishing the end-of-input drain", signum)
            return
        reader = self.message_reader
        if getattr(reader, "in_message", False):
            self.logger.warning("Received signal %d: stopping after the current message", signum)
            reader.deferred = lambda: self._terminate(signum)  # type: ignore[attr-defined]
            return
        self._terminate(signum)

    def _terminate(self, signum: int) -> t.NoReturn:
        self._terminating = True
        self.logger.warning("Signal %d: sending the records read so far, then stopping", signum)
        failed = True
        try:
            self.drain_all(is_endofpipe=True)
            failed = False
        except Exception as exc:
            self.logger.error(
                "Stopping on signal %d: %s; no STATE emitted past undelivered records", signum, exc
            )
        finally:
            self._shutdown()
            self.log_summary(failed=failed)
        sys.exit(128 + signum)

    def process_endofpipe(self) -> None:
        """Drain everything, log the summary, and fail if a record was left behind."""
        self._in_endofpipe = True
        try:
            super().process_endofpipe()
        except BaseException:
            self.log_summary(failed=True)
            self._shutdown()
            raise
        self._shutdown()
        unconfirmed = self._unconfirmed_records()  # 0 unless a sink broke its contract
        self.log_summary(failed=self.delivery.state_blocked is not None or unconfirmed > 0)
        if unconfirmed:
            msg = f"{unconfirmed} record(s) were not accepted by Lytics; STATE was not emitted"
            raise LyticsError(msg)
        if self.delivery.state_blocked is not None:
            msg = (
                f"{self.delivery.stats.oversized} record(s) larger than max_batch_bytes="
                f"{self.delivery.limits.max_batch_bytes} were not sent to Lytics (first: "
                f"{self.delivery.state_blocked}); "
                "STATE was not emitted past them. Shrink them at the source, raise "
                "`max_batch_bytes`, or set `skip_oversized_records` to accept the loss."
            )
            raise LyticsError(msg)

    def _shutdown(self) -> None:
        self.delivery.shutdown()

    def summary(self) -> dict[str, t.Any]:
        """Counters of this run (also logged at the end)."""
        return self.delivery.summary()

    def log_summary(self, *, failed: bool = False) -> None:
        """Log the per-run summary once."""
        self.delivery.log_summary(failed=failed)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        file_input: t.IO[str] | None = None,
    ) -> None:
        """Run the target; input it cannot handle exits non-zero with one clear log line."""
        try:
            super().invoke(
                about=about, about_format=about_format, config=config, file_input=file_input
            )
        except (BatchFileError, InputLineError, UnsupportedMessageError) as exc:
            cls.logger.error("%s", exc)
            sys.exit(1)


if __name__ == "__main__":
    TargetLyticsUsers.cli()
