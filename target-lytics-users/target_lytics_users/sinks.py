"""The batch sink: records -> JSON-array request bodies split by count and size -> Lytics."""

from __future__ import annotations

import typing as t
from collections import deque
from dataclasses import dataclass

from singer_sdk import metrics
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from target_lytics_users.client import (
    CollectResult,
    LyticsAbortedError,
    LyticsError,
    LyticsRejectedError,
)
from target_lytics_users.sdk_compat import (
    date_fromisoformat,
    datetime_fromisoformat,
    get_datelike_property_type,
    handle_invalid_timestamp_in_record,
    time_fromisoformat,
)
from target_lytics_users.serialize import dumps_record, make_validator

if t.TYPE_CHECKING:
    from concurrent.futures import Future

    from singer_sdk.sinks.core import BaseJSONSchemaValidator
    from singer_sdk.target_base import Target

    from target_lytics_users.delivery import Delivery

_SDC_FIELDS = frozenset(
    (
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    )
)

_DATE_PARSERS: dict[str, t.Callable[[str], t.Any]] = {
    "date": date_fromisoformat,
    "time": time_fromisoformat,
    "date-time": datetime_fromisoformat,
}


@dataclass
class Batch:
    """One request body ready to send."""

    seq: int
    body: bytes
    count: int
    first_line: int
    last_line: int


class LyticsSink(BatchSink):
    """Serializes each record straight into the next request body and posts full bodies.

    A body is sealed when it holds `max_batch_records` records or when the next record would
    take it past `max_batch_bytes`. Sealed bodies are posted by the run's `Delivery` thread pool
    while reading goes on; the SDK's `drain_all` (end of input, SIGTERM, 5-minute age) waits until
    every body of this sink is accepted, which is what makes STATE safe (see `process_batch`).
    """

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
        *,
        delivery: Delivery,
        lytics_stream: str,
    ) -> None:
        """Set up batching limits, the Lytics stream and the schema-derived fast checks.

        `delivery` is the run's coordinator (client, pool, counters, failure); the target
        passes it with `lytics_stream` (see `TargetLyticsUsers.get_sink_class`).
        """
        super().__init__(target, stream_name, schema, key_properties)
        self.delivery = delivery
        self.lytics_stream = lytics_stream
        self.max_records = delivery.limits.max_batch_records
        self.max_bytes = delivery.limits.max_batch_bytes
        self._max_record_bytes = delivery.limits.max_record_bytes
        # Largest record sent: within Lytics' per-record limit and, with the brackets of
        # a body, within `max_batch_bytes`.
        self._max_size = min(self._max_record_bytes, self.max_bytes - 2)
        # The body under construction: b"[" + records joined by b",". Each record is copied
        # in at once (orjson's own result keeps an ~8 KB allocation per record).
        self._buf = bytearray(b"[")
        self._count = 0
        self._first_line = 0
        self._last_line = 0
        self._seq = 0
        self._ready: list[Batch] = []
        self._inflight: deque[tuple[Batch, Future[CollectResult]]] = deque()
        self._inflight_records = 0
        self._acked_not_tallied = 0
        self.batch_counter = metrics.batch_counter(stream_name)
        props = self.schema.get("properties") or {}
        self._known_fields = frozenset(props)
        # Source-location metadata the tap declared (tap-braze-csv's `_sdc_source_file`, an
        # absolute path of the runner, and `_sdc_source_lineno`) is not sent, like the SDK's own
        # `_sdc_*` fields, unless `add_record_metadata` is set: it is not profile data. It is
        # dropped when the record is serialized: the SDK still checks key properties with it.
        self._tap_sdc_fields = frozenset(k for k in props if k.startswith("_sdc_source_"))
        self._drop_tap_sdc = bool(self._tap_sdc_fields) and not self.include_sdc_metadata_properties
        self._additional_ok = bool(self.schema.get("additionalProperties", False))
        self._datelike: list[tuple[str, str]] = []
        for name, prop in props.items():
            kind = get_datelike_property_type(prop) if isinstance(prop, dict) and prop else None
            if kind:
                self._datelike.append((name, kind))

    # Validation -------------------------------------------------------------------------

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """Compiled (fastjsonschema) validator: same checks as the SDK default, ~10x faster."""
        if not self.validate_schema:
            return None
        return make_validator(self.schema)

    def _validate_and_parse(self, record: dict) -> dict:
        """Validate like the SDK, but check date-like strings instead of converting them.

        The SDK parses every date/time field into a `datetime` (looking each field's type
        up in the schema for every record) so that SQL sinks get native values; this sink
        would only turn it back into the same ISO 8601 text. So the strings are checked with
        the SDK's own parsers (an unparseable value still fails the run, as by default)
        and forwarded unchanged; the date-like fields are found once per schema.
        """
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord:
                self.logger.exception("Record validation failed")
                if self.fail_on_record_validation_exception:
                    raise
        if self._datelike:
            self._check_datelike(record)
        if not self._additional_ok and not record.keys() <= self._known_fields:
            self._warn_unknown_fields(record)
        return record

    def _check_datelike(self, record: dict) -> None:
        """Parse the date-like strings with the SDK's parsers; the SDK's treatment on failure."""
        for key, kind in self._datelike:
            value = record.get(key)
            if value is None or not isinstance(value, str):
                continue
            try:
                _DATE_PARSERS.get(kind, datetime_fromisoformat)(value)
            except ValueError as ex:
                record[key] = handle_invalid_timestamp_in_record(
                    record, [key], value, kind, ex, self.datetime_error_treatment, self.logger
                )

    def _warn_unknown_fields(self, record: dict) -> None:
        """Warn once per field the schema does not have (the SDK's own warning)."""
        for key in record.keys() - self._known_fields:
            if record[key] is not None and key not in self._warned_missing_fields:
                self.logger.warning("No schema for record field '%s'", key)
                self._warned_missing_fields.add(key)

    def _remove_sdc_metadata_from_record(self, record: dict) -> None:
        """Drop `_sdc_*` fields like the SDK, without 7 dict pops per record when none is there."""
        if not _SDC_FIELDS.isdisjoint(record):
            super()._remove_sdc_metadata_from_record(record)

    # Batching ---------------------------------------------------------------------------

    def process_record(self, record: dict, context: dict) -> None:
        """Serialize `record` into the current body (sealing it first if it would not fit)."""
        if self._drop_tap_sdc and not self._tap_sdc_fields.isdisjoint(record):
            data = dumps_record({k: v for k, v in record.items() if k not in self._tap_sdc_fields})
        else:
            data = dumps_record(record)
        size = len(data)
        line = self.delivery.line_number
        if size > self._max_size:
            self._reject(record, line, size)
            return
        if self._count and len(self._buf) + size + 2 > self.max_bytes:
            self._seal()
        if self._count:
            self._buf += b","
        else:
            self._first_line = line
        self._buf += data
        self._count += 1
        self._last_line = line
        if self._count >= self.max_records:
            self._seal()

    def _reject(self, record: dict, line: int, size: int) -> None:
        """Report a record too large to send (over Lytics' per-record limit, or any body)."""
        if size > self._max_record_bytes:
            self.delivery.reject_too_large(self, record, line, size)
        else:
            self.delivery.reject_oversized(self, record, line, size)

    def _seal(self) -> None:
        if not self._count:
            return
        self._seq += 1
        self._buf += b"]"
        body = bytes(self._buf)
        self._ready.append(Batch(self._seq, body, self._count, self._first_line, self._last_line))
        self._buf = bytearray(b"[")
        self._count = 0

    @property
    def current_size(self) -> int:
        """Records buffered, sealed or in flight: everything not yet confirmed by Lytics.

        The SDK's `drain_one` skips a sink whose size is 0 and `drain_all` then writes
        STATE, so records still in flight must count here.
        """
        return self._count + sum(b.count for b in self._ready) + self._inflight_records

    @property
    def is_full(self) -> bool:
        """A sealed body is waiting to be sent (or a send failed and must be reported)."""
        return bool(self._ready) or self.delivery.failed

    # Sending ----------------------------------------------------------------------------

    def _label(self, batch: Batch) -> str:
        return (
            f"batch #{batch.seq} of stream '{self.stream_name}' -> Lytics stream "
            f"'{self.lytics_stream}' ({batch.count} records, input lines "
            f"{batch.first_line}-{batch.last_line}, {len(batch.body)} bytes)"
        )

    def _send(self, batch: Batch) -> CollectResult:
        """Post one body (runs in a pool thread)."""
        label = self._label(batch)
        try:
            result = self.delivery.client.collect(self.lytics_stream, batch.body, label=label)
        except LyticsAbortedError:
            raise
        except Exception as exc:
            self.delivery.fail(exc)
            raise
        self.delivery.record_batch(self, batch.count, len(batch.body), result)
        if result.rejected_count:
            self.logger.warning(
                "Lytics rejected %d of %d records of %s (message_count=%d)",
                result.rejected_count,
                batch.count,
                label,
                result.message_count,
            )
            if self.delivery.limits.fail_on_rejected:
                msg = (
                    f"Lytics rejected {result.rejected_count} records of {label} and "
                    "`fail_on_rejected` is set"
                )
                error = LyticsRejectedError(msg)
                self.delivery.fail(error)
                raise error
        else:
            self.logger.info("Lytics accepted %s", label)
        return result

    def _submit_ready(self) -> None:
        executor = self.delivery.executor
        for batch in self._ready:
            self._inflight.append((batch, executor.submit(self._send, batch)))
            self._inflight_records += batch.count
        self._ready = []

    def _reap(self, *, keep: int) -> None:
        """Wait for the oldest requests until at most `keep` are in flight; raise a failure."""
        while self._inflight and (len(self._inflight) > keep or self._inflight[0][1].done()):
            batch, future = self._inflight[0]
            try:
                future.result()
            except Exception as exc:
                # Report the failure that stopped the run, not a batch aborted because of it.
                error = self.delivery.fail(exc)
                self.delivery.log_summary(failed=True)
                if isinstance(error, LyticsError):
                    raise error from None
                msg = f"Sending {self._label(batch)} failed: {type(error).__name__}: {error}"
                raise LyticsError(msg) from error
            self._inflight.popleft()
            self._inflight_records -= batch.count
            self._acked_not_tallied += batch.count

    def process_batch(self, context: dict) -> None:
        """Send sealed bodies; on a full drain also send the partial body and wait for all.

        The SDK calls this from `drain_one` when `is_full` (a body was sealed): the bodies
        are handed to the pool and only back-pressure waits. From `drain_all` nothing is
        sealed-but-unsent (a sealed body always drains at once), so an empty `_ready` means a
        full drain (the target also flags every `drain_all` explicitly): the partial body is sealed and sent, and this returns only once Lytics
        accepted every body of this sink. Any failure raises, so `drain_all` never reaches
        its STATE write past undelivered records.
        """
        _ = context
        full_drain = self.delivery.draining_all or not self._ready
        if full_drain:
            self._seal()
        self._submit_ready()
        self._reap(keep=0 if full_drain else self.delivery.limits.max_pending_batches)

    def mark_drained(self) -> None:
        """Tally only records Lytics confirmed (the SDK would tally everything read)."""
        self._batch_records_read = self._acked_not_tallied
        self._acked_not_tallied = 0
        super().mark_drained()

    def clean_up(self) -> None:
        """Flush the SDK metrics of this sink."""
        self.batch_counter.exit()
        super().clean_up()
