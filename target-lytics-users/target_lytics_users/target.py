"""target-lytics-users: the Target class and its settings."""

from __future__ import annotations

import sys
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.target_base import Target

from target_lytics_users.client import (
    CollectResult,
    LyticsAbortedError,
    LyticsClient,
    LyticsError,
    LyticsRejectedError,
)
from target_lytics_users.common.batch_files import BatchFileError, iter_batch_records
from target_lytics_users.common.config_numbers import coerce_number_strings
from target_lytics_users.common.input_lines import InputLineError
from target_lytics_users.common.secrets import header_secret_errors, strip_secrets
from target_lytics_users.serialize import LineCountingOrjsonReader, UnsupportedMessageError
from target_lytics_users.sinks import LyticsSink

if t.TYPE_CHECKING:
    from pathlib import PurePath
    from types import FrameType

    from singer_sdk.singerlib.encoding.base import GenericSingerReader
    from singer_sdk.sinks import Sink

#: The stream `meltano config <loader> test` pipes into a loader (one made-up record). It is
#: never sent: its SCHEMA triggers a connection check instead (see `check_connection`).
MELTANO_TEST_STREAM = "meltano_test_stream"

DEFAULT_MAX_BATCH_BYTES = 4_000_000
#: Singer streams loaded into a Lytics stream of their own unless `lytics_stream_map` says
#: otherwise (tap-braze-csv's engagement records).
OWN_STREAMS: dict[str, str] = {"braze_engagement": "braze_engagement"}
LYTICS_MAX_BYTES = 10 * 1024 * 1024
#: Lytics' platform limits: "Max size in batch: 16 KB: byte size of a single input record
#: within a batch". 16,000 is safe whether "KB" means 1,000 or 1,024 bytes.
DEFAULT_MAX_RECORD_BYTES = 16_000
#: Fields tried, in order, to name a skipped record by its user.
ID_FIELDS = ("external_id", "braze_id", "user_id", "id", "_id", "uid")


@dataclass
class RunStats:
    """Per-run counters for the summary."""

    records_sent: int = 0  # records in bodies Lytics answered 2xx to
    batches: int = 0
    rejected: int = 0  # Lytics' data.rejected_count, summed
    oversized: int = 0  # records never sent: larger than max_batch_bytes on their own
    too_large: int = 0  # records never sent: over Lytics' per-record limit (max_record_bytes)
    bytes: int = 0
    requests: int = 0
    retries: int = 0


class TargetLyticsUsers(Target):
    """Loads user records into a Lytics stream through the collect API."""

    name = "target-lytics-users"
    default_sink_class = LyticsSink
    message_reader_class = LineCountingOrjsonReader

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
            description="Retries of a request answered 429/5xx or failing on the network.",
        ),
        th.Property(
            "retry_backoff_base",
            th.NumberType(minimum=0),
            default=1.0,
            description=(
                "Seconds of the first retry delay; doubles each retry (with jitter). "
                "A `Retry-After` header wins."
            ),
        ),
        th.Property(
            "retry_backoff_max",
            th.NumberType(minimum=0),
            default=60.0,
            description="Longest wait between retries, in seconds (also caps `Retry-After`).",
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
            max_retries=int(cfg.get("max_retries", 8)),
            backoff_base=float(cfg.get("retry_backoff_base", 1.0)),
            backoff_max=float(cfg.get("retry_backoff_max", 60.0)),
            logger=self.logger,
        )
        rows = int(cfg.get("max_batch_records") or 5000)
        if cfg.get("batch_size_rows"):
            rows = min(rows, int(cfg["batch_size_rows"]))
        self.max_batch_records = rows
        self.max_batch_bytes = int(cfg.get("max_batch_bytes") or DEFAULT_MAX_BATCH_BYTES)
        self.max_concurrency = int(cfg.get("max_concurrency") or 2)
        self.max_pending_batches = self.max_concurrency * 2
        self.fail_on_rejected = bool(cfg.get("fail_on_rejected"))
        self.max_record_bytes = int(cfg.get("max_record_bytes") or DEFAULT_MAX_RECORD_BYTES)
        self.skip_oversized = bool(cfg.get("skip_oversized_records"))
        # The SDK's drain age (a class constant of 5 minutes), per run.
        self._MAX_RECORD_AGE_IN_MINUTES = float(cfg.get("max_record_age_seconds") or 300) / 60
        self.draining_all = False  # inside drain_all: sinks drain completely
        self._terminating = False
        self._in_endofpipe = False
        self._stream_map: dict[str, str] = dict(cfg.get("lytics_stream_map") or {})
        self._default_stream: str = cfg.get("stream") or "braze_users"
        self.stats = RunStats()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        self._state_blocked: str | None = None
        self._summary_logged = False
        self._versions_ignored: set[str | None] = set()
        self._started = time.monotonic()

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

    # Helpers used by the sinks -----------------------------------------------------------

    @property
    def line_number(self) -> int:
        """Input line being processed (1-based), for messages about a record."""
        return int(getattr(self.message_reader, "line_number", 0))

    @property
    def executor(self) -> ThreadPoolExecutor:
        """Thread pool posting request bodies while input is read."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.max_concurrency, thread_name_prefix="lytics-collect"
            )
        return self._executor

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

    @property
    def failed(self) -> bool:
        """A batch failed: the run must stop."""
        return self._error is not None

    def fail(self, exc: BaseException) -> BaseException:
        """Record the failure that stops the run (the first real one) and stop retries."""
        with self._lock:
            if self._error is None and not isinstance(exc, LyticsAbortedError):
                self._error = exc
            self.client.abort.set()
            return self._error or exc

    def record_batch(self, sink: LyticsSink, count: int, size: int, result: CollectResult) -> None:
        """Count a batch Lytics accepted (called from pool threads)."""
        with self._lock:
            self.stats.records_sent += count
            self.stats.batches += 1
            self.stats.rejected += result.rejected_count
            self.stats.bytes += size
            sink.batch_counter.increment()

    def reject_oversized(self, sink: LyticsSink, record: dict, line: int, size: int) -> None:
        """Report a record too large for any request; block STATE unless tolerated."""
        key = {k: record.get(k) for k in sink.key_properties}
        where = f"stream '{sink.stream_name}', input line {line}" + (f", key {key}" if key else "")
        self.logger.error(
            "Record REJECTED (%s): it serializes to %d bytes, more than max_batch_bytes=%d "
            "allows for one record; it is not sent to Lytics.",
            where,
            size,
            self.max_batch_bytes,
        )
        with self._lock:
            self.stats.oversized += 1
        if not self.skip_oversized and self._state_blocked is None:
            self._state_blocked = where

    def reject_too_large(self, sink: LyticsSink, record: dict, line: int, size: int) -> None:
        """Report a record over Lytics' per-record limit; skip it, or stop the run.

        Lytics would refuse it inside a batch; it is named here by its id (and the stream's
        key) so it can be fixed at the source. With `fail_on_rejected` nothing after it is
        read and no STATE goes past it.
        """
        ident = next((f"{k}={record[k]!r}" for k in ID_FIELDS if record.get(k) is not None), "")
        key = {k: record.get(k) for k in sink.key_properties}
        where = f"stream '{sink.stream_name}', input line {line}"
        where += f", {ident}" if ident else ""
        where += f", key {key}" if key else ""
        with self._lock:
            self.stats.too_large += 1
        msg = (
            f"Record REJECTED ({where}): {size} bytes, over Lytics' limit of 16 KB for one "
            f"record in a batch (max_record_bytes={self.max_record_bytes})"
        )
        if self.fail_on_rejected:
            error = LyticsRejectedError(msg + "; stopping because `fail_on_rejected` is set")
            self.fail(error)
            self.log_summary(failed=True)
            raise error
        self.logger.error("%s; skipped (not sent to Lytics).", msg)

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
            self.line_number,
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
        self.draining_all = True
        try:
            super()._drain_all(sink_list, parallelism)
        finally:
            self.draining_all = False

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
        if self._state_blocked is not None:
            self.logger.warning(
                "STATE not emitted: a record too large to send (%s) was not delivered.",
                self._state_blocked,
            )
            return
        unconfirmed = self._unconfirmed_records()
        if unconfirmed or self.failed:
            self.logger.warning(
                "STATE not emitted: %d records not yet accepted by Lytics%s.",
                unconfirmed,
                " (the run failed)" if self.failed else "",
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
        self.log_summary(failed=self._state_blocked is not None or unconfirmed > 0)
        if unconfirmed:
            msg = f"{unconfirmed} record(s) were not accepted by Lytics; STATE was not emitted"
            raise LyticsError(msg)
        if self._state_blocked is not None:
            msg = (
                f"{self.stats.oversized} record(s) larger than max_batch_bytes="
                f"{self.max_batch_bytes} were not sent to Lytics (first: {self._state_blocked}); "
                "STATE was not emitted past them. Shrink them at the source, raise "
                "`max_batch_bytes`, or set `skip_oversized_records` to accept the loss."
            )
            raise LyticsError(msg)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.client.close()

    def summary(self) -> dict[str, t.Any]:
        """Counters of this run (also logged at the end)."""
        with self._lock:
            out = asdict(self.stats)
        out["requests"] = self.client.stats.requests
        out["retries"] = self.client.stats.retries
        out["dry_run"] = bool(self.config.get("dry_run"))
        out["seconds"] = round(time.monotonic() - self._started, 3)
        return out

    def log_summary(self, *, failed: bool = False) -> None:
        """Log the per-run summary once."""
        if self._summary_logged:
            return
        self._summary_logged = True
        s = self.summary()
        self.logger.info(
            "Lytics load summary%s: %d records sent in %d batches (%d bytes), %d rejected by "
            "Lytics, %d skipped over Lytics' 16 KB record limit, %d too large to send, "
            "%d requests, %d retries%s, %.1fs",
            " (run FAILED)" if failed else "",
            s["records_sent"],
            s["batches"],
            s["bytes"],
            s["rejected"],
            s["too_large"],
            s["oversized"],
            s["requests"],
            s["retries"],
            " [dry run: nothing stored]" if s["dry_run"] else "",
            s["seconds"],
            extra={"summary": s},
        )

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
