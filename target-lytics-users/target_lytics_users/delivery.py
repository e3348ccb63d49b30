"""The delivery coordinator of one run, shared by every sink.

It holds what the sinks of a run have in common: the Lytics client, the thread pool posting
request bodies, the batching limits, the run's counters, the failure that stops the run and
the record that blocks STATE. The target creates it and hands it to each sink it builds
(`TargetLyticsUsers.get_sink_class`), so a sink never reaches back into the target.
"""

from __future__ import annotations

import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from target_lytics_users.client import LyticsAbortedError, LyticsRejectedError

if t.TYPE_CHECKING:
    import logging

    from singer_sdk.metrics import Counter

    from target_lytics_users.client import CollectResult, LyticsClient

DEFAULT_MAX_BATCH_BYTES = 4_000_000
#: Lytics' platform limits: "Max size in batch: 16 KB: byte size of a single input record
#: within a batch". 16,000 is safe whether "KB" means 1,000 or 1,024 bytes.
DEFAULT_MAX_RECORD_BYTES = 16_000
#: Fields tried, in order, to name a skipped record by its user.
ID_FIELDS = ("external_id", "braze_id", "user_id", "id", "_id", "uid")


class SinkInfo(t.Protocol):
    """What the coordinator reads of a sink (a protocol: `sinks` imports this module)."""

    stream_name: str
    batch_counter: Counter

    @property
    def key_properties(self) -> t.Sequence[str]:
        """The stream's key properties."""
        ...


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


@dataclass(frozen=True)
class DeliveryLimits:
    """Batching and failure settings of one run."""

    max_batch_records: int
    max_batch_bytes: int
    max_record_bytes: int
    max_concurrency: int
    fail_on_rejected: bool
    skip_oversized: bool

    @property
    def max_pending_batches(self) -> int:
        """Bodies a sink may have in flight before it waits for the oldest."""
        return self.max_concurrency * 2

    @classmethod
    def from_config(cls, cfg: t.Mapping[str, t.Any]) -> DeliveryLimits:
        """Read the limits from the target's settings (`batch_size_rows` caps the records)."""
        rows = int(cfg.get("max_batch_records") or 5000)
        if cfg.get("batch_size_rows"):
            rows = min(rows, int(cfg["batch_size_rows"]))
        return cls(
            max_batch_records=rows,
            max_batch_bytes=int(cfg.get("max_batch_bytes") or DEFAULT_MAX_BATCH_BYTES),
            max_record_bytes=int(cfg.get("max_record_bytes") or DEFAULT_MAX_RECORD_BYTES),
            max_concurrency=int(cfg.get("max_concurrency") or 2),
            fail_on_rejected=bool(cfg.get("fail_on_rejected")),
            skip_oversized=bool(cfg.get("skip_oversized_records")),
        )


class Delivery:
    """Posts the sinks' bodies, counts what Lytics accepted, and records what stops the run."""

    def __init__(
        self,
        client: LyticsClient,
        limits: DeliveryLimits,
        *,
        dry_run: bool,
        line_number: t.Callable[[], int],
        logger: logging.Logger,
    ) -> None:
        """Set up counters and failure tracking; the pool starts with the first body."""
        self.client = client
        self.limits = limits
        self.dry_run = dry_run
        self.logger = logger
        self._line_number = line_number
        self.draining_all = False  # inside the SDK's drain_all: sinks drain completely
        self.stats = RunStats()
        #: Where the first undelivered oversized record was (STATE stays blocked), or None.
        self.state_blocked: str | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        self._summary_logged = False
        self._started = time.monotonic()

    @property
    def line_number(self) -> int:
        """Input line being processed (1-based), for messages about a record."""
        return self._line_number()

    @property
    def executor(self) -> ThreadPoolExecutor:
        """Thread pool posting request bodies while input is read."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.limits.max_concurrency, thread_name_prefix="lytics-collect"
            )
        return self._executor

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

    def record_batch(self, sink: SinkInfo, count: int, size: int, result: CollectResult) -> None:
        """Count a batch Lytics accepted (called from pool threads)."""
        with self._lock:
            self.stats.records_sent += count
            self.stats.batches += 1
            self.stats.rejected += result.rejected_count
            self.stats.bytes += size
            sink.batch_counter.increment()

    def reject_oversized(self, sink: SinkInfo, record: dict, line: int, size: int) -> None:
        """Report a record too large for any request; block STATE unless tolerated."""
        key = {k: record.get(k) for k in sink.key_properties}
        where = f"stream '{sink.stream_name}', input line {line}" + (f", key {key}" if key else "")
        self.logger.error(
            "Record REJECTED (%s): it serializes to %d bytes, more than max_batch_bytes=%d "
            "allows for one record; it is not sent to Lytics.",
            where,
            size,
            self.limits.max_batch_bytes,
        )
        with self._lock:
            self.stats.oversized += 1
        if not self.limits.skip_oversized and self.state_blocked is None:
            self.state_blocked = where

    def reject_too_large(self, sink: SinkInfo, record: dict, line: int, size: int) -> None:
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
            f"record in a batch (max_record_bytes={self.limits.max_record_bytes})"
        )
        if self.limits.fail_on_rejected:
            error = LyticsRejectedError(msg + "; stopping because `fail_on_rejected` is set")
            self.fail(error)
            self.log_summary(failed=True)
            raise error
        self.logger.error("%s; skipped (not sent to Lytics).", msg)

    def shutdown(self) -> None:
        """Wait for the pool's requests to end and close the client's sessions."""
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
        out["dry_run"] = self.dry_run
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
