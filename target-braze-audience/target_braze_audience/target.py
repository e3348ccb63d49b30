"""target-braze-audience: the Target class and its settings."""

from __future__ import annotations

import sys
import threading
import typing as t
from pathlib import Path

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, InvalidRecord
from singer_sdk.target_base import Target

from target_braze_audience import sdk_compat
from target_braze_audience.client import BrazeClient, BrazeSettingError
from target_braze_audience.common.batch_files import BatchFileError, iter_batch_records
from target_braze_audience.common.config_numbers import coerce_number_strings
from target_braze_audience.common.input_lines import InputLineError
from target_braze_audience.common.retries import DESCRIPTIONS as RETRY_DESCRIPTIONS
from target_braze_audience.common.secrets import header_secret_errors, strip_secrets
from target_braze_audience.deltas import (
    DeliveryIncompleteError,
    DeltaEngine,
    RemovalsHeldError,
    TargetTerminatedError,
)
from target_braze_audience.settings import ARRAY_WRITE_MODES, EngineSettings
from target_braze_audience.sinks import (
    BrazeAudienceReader,
    BrazeAudienceSink,
    UnsupportedMessageError,
)
from target_braze_audience.store import (
    DEFAULT_STORE_PATH,
    MembershipStore,
    StoreBusyError,
    StoreMismatchError,
    StoreUnusableError,
    resolve_store_url,
)
from target_braze_audience.summary import RunSummary

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.sinks import Sink

IDENTIFIERS = ["external_id", "braze_id", "email", "phone", "user_alias"]

#: The stream `meltano config <loader> test` pipes into a loader (one made-up record). It is
#: never loaded: its SCHEMA triggers a connection check instead (see `check_connection`).
MELTANO_TEST_STREAM = "meltano_test_stream"


class StoreUrlRequiredError(Exception):
    """`require_store_url` is set but `store_url` is not."""


def check_store_url(config: t.Mapping[str, t.Any], logger: t.Any, *, dry_run: bool) -> None:
    """Refuse a missing `store_url` when required; warn loudly when the default file is created."""
    if str(config.get("store_url") or "").strip():
        return
    if config.get("require_store_url"):
        msg = (
            "store_url is not set and require_store_url is on (as in the prod environment of "
            "meltano.yml, which reads it from BRAZE_AUDIENCE_STORE_URL): set store_url to a "
            "persistent SQLite path or a postgresql:// URL. Refusing to fall back to a local "
            f"{DEFAULT_STORE_PATH} that would be lost with this runner."
        )
        raise StoreUrlRequiredError(msg)
    path = Path(str(resolve_store_url(None).database))
    if not dry_run and not path.exists():
        logger.warning(
            "NO store_url SET: creating the membership store as a local SQLite file, %s. It "
            "records what Braze was told; if it is lost (ephemeral runner, new checkout, "
            "deleted folder) the next run sends every membership again and pays Braze data "
            "points again. Set store_url to a persistent path or a PostgreSQL URL.",
            path,
        )


class _Count:
    """Records of one stream taken on the fast path (synced to the SDK's sink in bulk)."""

    __slots__ = ("read",)

    def __init__(self, read: int) -> None:
        self.read = read


class TargetBrazeAudience(Target):
    """Writes audience membership to a Braze array attribute as add/remove deltas."""

    name = "target-braze-audience"
    default_sink_class = BrazeAudienceSink
    message_reader_class = BrazeAudienceReader

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Braze REST API key (needs `users.track`), sent as `Authorization: Bearer`.",
        ),
        th.Property(
            "rest_endpoint",
            th.StringType,
            required=True,
            description="Braze instance REST URL, e.g. `https://rest.iad-01.braze.com`.",
        ),
        th.Property(
            "attribute_name",
            th.StringType,
            default="lytics_segments",
            description="Array custom attribute that holds audience slugs.",
        ),
        th.Property(
            "backfill_existing_users",
            th.BooleanType,
            default=True,
            description=(
                "First complete snapshot of an audience sends its current members (true) "
                "or records them as a silent baseline, sending only later enters and exits (false)."
            ),
        ),
        th.Property(
            "update_existing_only",
            th.BooleanType,
            default=False,
            description=(
                "Never create Braze users (`_update_existing_only`). Braze silently skips "
                "objects of users it does not know, so accepted update-only adds are "
                "re-offered later (see `update_only_reoffers`)."
            ),
        ),
        th.Property(
            "update_only_reoffers",
            th.IntegerType(minimum=0),
            default=5,
            description=(
                "With update_existing_only: how many times an accepted update-only add is "
                "sent again on later runs while the user is still a member, in case Braze "
                "skipped it because the user did not exist yet (0 = never). Each re-offer "
                "of a user Braze knows may cost a data point; the summary counts them."
            ),
        ),
        th.Property(
            "update_only_reoffer_hours",
            th.NumberType(minimum=0),
            default=24.0,
            description=(
                "Hours before the first re-offer of an update-only add; each later one "
                "waits twice as long (24 h, 48 h, 96 h, ... by default)."
            ),
        ),
        th.Property(
            "store_url",
            th.StringType,
            secret=True,
            description=(
                "Membership store: a SQLite file path or a SQLAlchemy URL "
                "(`postgresql://user:pass@host/db`). Default: `.braze_audience_store.sqlite` "
                "in the working directory (a warning says so when it is created)."
            ),
        ),
        th.Property(
            "require_store_url",
            th.BooleanType,
            default=False,
            description=(
                "Refuse to run without an explicit `store_url` instead of creating the default "
                "SQLite file (set in production: a lost store makes the next run send every "
                "membership again)."
            ),
        ),
        th.Property(
            "batch_size",
            th.IntegerType(minimum=1, maximum=75),
            default=75,
            description=(
                "Attribute objects (users) per /users/track request (at most 75). When "
                "Braze refuses requests this big (some contracts allow 50), the run "
                "settles at a size it accepts and logs it."
            ),
        ),
        th.Property(
            "max_array_length",
            th.IntegerType(minimum=1),
            default=25,
            description=(
                "Braze's cap on the array attribute (25 by default, up to 100; 500 on "
                "newer workspaces): users whose attribute would hold more values are "
                "counted and warned about (Braze drops the oldest values beyond its cap)."
            ),
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description=(
                "Compute and report deltas; send nothing, change no store, emit no STATE."
            ),
        ),
        th.Property(
            "max_removal_fraction",
            th.NumberType(minimum=0, maximum=1),
            default=0.5,
            description=(
                "When a complete snapshot would remove more than this fraction of the members "
                "the store holds for an audience, that audience's removals are held (not sent, "
                "decided again next run) and the run exits 1 after delivering everything else. "
                "Audiences with fewer than 20 stored members are exempt. 1 lets every removal "
                "through (a real emptying)."
            ),
        ),
        th.Property(
            "array_write_mode",
            th.StringType(allowed_values=list(ARRAY_WRITE_MODES)),
            default="delta",
            description=(
                "`delta`: add/remove the changed values (one data point per value). "
                "`set_when_cheaper`: for a user with two or more changed values, assign the "
                "complete array from the store instead (one data point), e.g. a backfill of "
                "a user in 3 audiences costs 1 instead of 3. It OVERWRITES every value of "
                "`attribute_name` written by anyone else (other integrations, the Braze "
                "dashboard, other runners): only for a target that is the attribute's only "
                "writer. Takes the store exclusively (no concurrent runners)."
            ),
        ),
        th.Property(
            "identifier_field",
            th.StringType(allowed_values=IDENTIFIERS),
            default="external_id",
            description=(
                "Braze identifier the record's id is sent as: external_id, braze_id, email, "
                "phone or user_alias (with `alias_label`)."
            ),
        ),
        th.Property(
            "alias_label",
            th.StringType,
            description="`alias_label` of the user alias when identifier_field is user_alias.",
        ),
        th.Property(
            "external_id_field",
            th.StringType,
            default="external_id",
            description="Record field holding the user's identifier.",
        ),
        th.Property(
            "audience_field",
            th.StringType,
            default="audience_slug",
            description="Record field holding the audience (the stream name when absent).",
        ),
        th.Property(
            "snapshot_stream",
            th.StringType,
            default="audience_snapshots",
            description="Stream carrying the tap's completion signal (member_count per scan).",
        ),
        th.Property(
            "ignore_streams",
            th.ArrayType(th.StringType),
            default=["audiences"],
            description="Streams that carry no membership (e.g. the tap's audience definitions).",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=32),
            default=4,
            description="Requests in flight at once.",
        ),
        th.Property(
            "rate_limit_per_second",
            th.NumberType(minimum=0),
            default=50,
            description=(
                "Client-side cap on /users/track requests per second (0 = none). Braze "
                "also paces us through X-RateLimit-* headers and 429s."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=5,
            description=RETRY_DESCRIPTIONS["max_retries"],
        ),
        th.Property(
            "max_rate_limit_retries",
            th.IntegerType(minimum=0),
            default=30,
            description=RETRY_DESCRIPTIONS["max_rate_limit_retries"],
        ),
        th.Property(
            "request_timeout",
            th.NumberType(minimum=0),
            default=30,
            description=(
                "Seconds to wait for the server to accept a connection, then for each part of its answer (a timeout per wait, not a limit on the whole request)."
            ),
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
            default=60.0,  # Braze's rate-limit windows reset each minute: a reset wait fits
            description=RETRY_DESCRIPTIONS["retry_backoff_max"],
        ),
    ).to_dict()

    #: SDK built-in target settings this target has no use for: membership deltas are neither
    #: appended, upserted nor overwritten (`load_method`), Braze receives no `_sdc_*` metadata
    #: (`add_record_metadata`), and requests hold `batch_size` users (`batch_size_rows`).
    UNSUPPORTED_BUILTIN_SETTINGS = ("load_method", "add_record_metadata", "batch_size_rows")

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add the SDK's built-in settings except those the target would silently ignore."""
        super().append_builtin_config(config_jsonschema)
        for name in cls.UNSUPPORTED_BUILTIN_SETTINGS:
            config_jsonschema["properties"].pop(name, None)

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Initialize; the store opens with the first message."""
        super().__init__(*args, **kwargs)
        self._engine: DeltaEngine | None = None
        self._stop = threading.Event()
        self._fast: dict[str, Sink | None] = {}
        self._handlers: dict[str, t.Callable[[dict[str, t.Any]], None]] = {}
        self._counts: dict[str, _Count] = {}  # records taken on the fast path, per stream
        self._reported: dict[int, int] = {}
        self._versions_ignored: set[str | None] = set()
        self._confirmed = False  # everything read was delivered (set at end of input)
        self.last_summary: RunSummary | None = None
        self._connection_test = False

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Strip secrets read from files (trailing newline) and check the key is a header value.

        Done where the config is loaded, so no header, log line or traceback can carry
        the raw value. Number settings given as strings (Meltano env vars) are parsed.
        """
        config = strip_secrets(sdk_compat.raw_config(self), self.config_jsonschema)
        config, numbers = coerce_number_strings(config, self.config_jsonschema)
        sdk_compat.set_raw_config(self, config)
        if numbers and raise_errors:
            raise ConfigValidationError(numbers[0], errors=numbers)
        errors = [*numbers, *super()._validate_config(raise_errors=raise_errors)]
        extra = header_secret_errors(self.config, ["api_key"])
        if extra and raise_errors:
            raise ConfigValidationError(extra[0], errors=extra)
        return [*errors, *extra]

    # -- pipeline --------------------------------------------------------------------

    @property
    def engine(self) -> DeltaEngine:
        """The run's delta pipeline (opens the store and the Braze client)."""
        if self._engine is None:
            cfg = self.config
            settings = EngineSettings.from_config(cfg)
            if settings.identifier_field == "user_alias" and not cfg.get("alias_label"):
                msg = "identifier_field is user_alias: set alias_label"
                raise ValueError(msg)
            check_store_url(cfg, self.logger, dry_run=settings.dry_run)
            store = MembershipStore(
                cfg.get("store_url"),
                dry_run=settings.dry_run,
                logger=self.logger,
                # A complete array overwrites what runners of other audiences delivered.
                exclusive=settings.array_write_mode == "set_when_cheaper",
            )
            self.logger.info(
                "Membership store: %s%s",
                store.display_url,
                " (dry run: nothing is committed)" if settings.dry_run else "",
            )
            try:
                store.check_meta(
                    attribute_name=settings.attribute_name,
                    identifier_field=settings.identifier_field,
                )
            except Exception:
                store.close()
                raise
            if settings.array_write_mode == "set_when_cheaper":
                # A complete array is only right when nobody else writes the attribute: no
                # other run may use this store meanwhile (the store's lock is store-wide).
                self.logger.info(
                    "array_write_mode=set_when_cheaper: users with two or more changes get "
                    "their complete '%s' array (1 data point), overwriting any value this "
                    "store did not write",
                    settings.attribute_name,
                )
            client = None if settings.dry_run else self._new_client()
            self._engine = DeltaEngine(settings, store, client, self.logger, self._stop)
        return self._engine

    def _new_client(self) -> BrazeClient:
        cfg = self.config
        return BrazeClient(
            api_key=cfg["api_key"],
            rest_endpoint=cfg["rest_endpoint"],
            rate_limit_per_second=float(cfg.get("rate_limit_per_second", 50)),
            max_retries=int(cfg.get("max_retries", 5)),
            max_rate_limit_retries=int(cfg.get("max_rate_limit_retries", 30)),
            request_timeout=float(cfg.get("request_timeout", 30)),
            retry_backoff_base=float(cfg.get("retry_backoff_base", 1.0)),
            retry_backoff_max=float(cfg.get("retry_backoff_max", 60.0)),
            stop=self._stop,
            logger=self.logger,
        )

    def check_connection(self) -> None:
        """Check the key and endpoint with a request that writes nothing; open no store.

        `meltano config target-braze-audience test` pipes a made-up record into the loader;
        loading it would add a user to a live Braze workspace and create the membership store.
        """
        self._connection_test = True
        message = self._new_client().check_connection()
        self.logger.info(
            "Connection test: %s. Meltano's test record was not loaded and no membership "
            "store was opened.",
            message,
        )

    def _fast_sink(self, stream: str) -> Sink | None:
        """Return the sink validating `stream`, or None when stream maps are in play."""
        if stream not in self._fast:
            sdk_compat.assert_sink_exists(self, stream)
            plain = not self.config.get("stream_maps") and not self.config.get("flattening_enabled")
            self._fast[stream] = self.get_sink(stream) if plain else None
        return self._fast[stream]

    def _process_schema_message(self, message_dict: dict) -> None:
        if message_dict.get("stream") == MELTANO_TEST_STREAM:
            self.check_connection()
            return
        self._report_counts()
        super()._process_schema_message(message_dict)
        self._fast.pop(message_dict.get("stream", ""), None)
        self._handlers.pop(message_dict.get("stream", ""), None)
        self._counts.pop(message_dict.get("stream", ""), None)

    def _process_record_message(self, message_dict: dict) -> None:
        """Validate and hand the record to the pipeline, in input order.

        The SDK's per-record path (copy, map transform, metadata, timestamp parsing,
        per-sink buffering, drain-when-full) costs more than everything this target
        does with a record and lets streams drain out of order; without stream maps we
        keep its schema validation and metrics and skip the rest, through one function
        per stream built by :meth:`_record_handler`. With stream maps the SDK path is
        used (the sink forwards to the same pipeline).
        """
        try:
            handler = self._handlers[message_dict["stream"]]
            record = message_dict["record"]
        except KeyError:
            if message_dict.get("stream") == MELTANO_TEST_STREAM and self._connection_test:
                return  # Meltano's test record: checked, never loaded
            self.message_reader.assert_line_requires(message_dict, requires={"stream", "record"})
            stream: str = message_dict["stream"]
            fast = self._fast_sink(stream)
            if fast is None:
                super()._process_record_message(message_dict)
                return
            handler = self._handlers[stream] = self._record_handler(stream, fast)
            record = message_dict["record"]
        handler(record)

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """Ignore ACTIVATE_VERSION, saying why once per stream: it never removes anyone."""
        stream = message_dict.get("stream")
        if stream not in self._versions_ignored:
            self._versions_ignored.add(stream)
            self.logger.warning(
                "ACTIVATE_VERSION of stream '%s' ignored: memberships are removed only after "
                "a complete audience snapshot (stream 'audience_snapshots'), never because "
                "a table version changed",
                stream,
            )

    def _process_batch_message(self, message_dict: dict) -> None:
        """Handle every record of a BATCH message's files exactly like a RECORD message.

        The SDK's own BATCH path hands whole files to ``process_batch``, which a RecordSink
        ignores: the records were dropped while the STATE after them was still emitted.
        """
        self.message_reader.assert_line_requires(
            message_dict, requires={"stream", "encoding", "manifest"}
        )
        stream = message_dict["stream"]
        sdk_compat.assert_sink_exists(self, stream)
        count = 0
        for record in iter_batch_records(message_dict):
            self._process_record_message({"type": "RECORD", "stream": stream, "record": record})
            count += 1
        self.logger.info(
            "BATCH of stream '%s': %d records read from %d file(s)",
            stream,
            count,
            len(message_dict["manifest"]),
        )

    def _record_handler(self, stream: str, sink: Sink) -> t.Callable[[dict[str, t.Any]], None]:
        """Return validate-then-pipeline for `stream`'s records (the target's hot path)."""
        validator = sdk_compat.sink_validator(sink)
        validate = validator.validate if validator is not None else None
        handle = self.engine.handler_for(stream)
        count = self._counts[stream] = _Count(sdk_compat.records_read(sink))
        report_every = 4096

        def on_record(record: dict[str, t.Any]) -> None:
            if validate is not None:
                try:
                    validate(record)
                except InvalidRecord as exc:
                    msg = (
                        f"Stream '{stream}' record #{count.read + 1} does not "
                        f"match its schema: {exc}"
                    )
                    raise InvalidRecord(msg, record) from exc
            handle(record)
            count.read += 1
            if count.read % report_every == 0:
                self._report_counts()

        return on_record

    def _report_counts(self) -> None:
        """Feed the SDK's record counts and metric in bulk (a per-record call reads the clock)."""
        for stream, sink in self._fast.items():
            count = self._counts.get(stream)
            if sink is None or count is None:
                continue  # the SDK path counts its own records
            sdk_compat.set_records_read(sink, count.read)
            done = self._reported.get(id(sink), 0)
            if count.read > done:
                sink.record_counter_metric.increment(count.read - done)
                self._reported[id(sink)] = count.read

    # -- end of input / signals ---------------------------------------------------------

    def process_endofpipe(self) -> None:
        """Deliver everything, then (and only then) let the SDK emit STATE."""
        if self._connection_test and self._engine is None:
            super().process_endofpipe()  # a connection test only: no store, nothing to deliver
            return
        engine = self.engine
        self._report_counts()
        try:
            self.last_summary = engine.finish()
        finally:
            engine.store.close()
        self._confirmed = True
        if engine.s.dry_run:
            self.logger.info("Dry run: no STATE emitted")
            sdk_compat.clear_latest_state(self)
        super().process_endofpipe()
        if engine.held:
            # After delivery and STATE: what was sent is confirmed; only removals are held.
            raise RemovalsHeldError(" ".join(engine.held))

    def _write_state_message(self, state: dict) -> None:
        """Write STATE only once Braze confirmed everything before it (end of input).

        The SDK also calls this from ``drain_all`` when its max-record-age check fires
        (records read through stream maps or BATCH files, every 5 minutes): this target
        delivers only at the end of input, so at that point its deltas still sit in the
        store's open transaction and a kill after such a STATE would make the next run
        start past users Braze never got. Those STATEs are held; the end of input writes
        the latest one after delivery.
        """
        if not self._confirmed:
            self.logger.debug("STATE held until Braze confirmed the deltas before it")
            return
        super()._write_state_message(state)

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: stop; remove nobody; never mark undelivered deltas delivered."""
        self.logger.warning(
            "Received signal %d: stopping. Nobody is removed; deltas not confirmed by "
            "Braze stay pending for the next run.",
            signum,
        )
        self._stop.set()
        if self._engine is not None and self._engine.delivering:
            return  # the delivery loop finishes in-flight requests, records them, then stops
        raise TargetTerminatedError(signum)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        file_input: t.IO[str] | None = None,
    ) -> None:
        """Run the target; known failures exit non-zero with one clear log line."""
        try:
            super().invoke(
                about=about, about_format=about_format, config=config, file_input=file_input
            )
        except TargetTerminatedError as exc:
            cls.logger.error("Stopped by signal %d: no STATE emitted", exc.signum)
            sys.exit(128 + exc.signum)
        except (
            BrazeSettingError,
            DeliveryIncompleteError,
            RemovalsHeldError,
            StoreMismatchError,
            StoreBusyError,
            StoreUnusableError,
            BatchFileError,
            InputLineError,
            UnsupportedMessageError,
        ) as exc:
            cls.logger.error("%s", exc)
            sys.exit(1)


if __name__ == "__main__":
    TargetBrazeAudience.cli()
