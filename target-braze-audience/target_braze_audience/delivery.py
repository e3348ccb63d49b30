"""Delivery: planned requests sent to Braze in threads, and its answers recorded.

Requests come from :class:`~target_braze_audience.planning.RequestPlanner`; up to
`max_concurrency` are in flight at once. Each answer is recorded in the store (accepted,
rejected per object) and the run summary. A request refused without per-object detail is
split in two until the cause is isolated (refusal bisection), and :class:`BatchSizer`
learns from those splits when the workspace takes fewer objects per request.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from target_braze_audience.client import BrazeClient, BrazeSettingError, TrackResult
from target_braze_audience.store import ADD, REMOVE, Delta, Membership, MembershipStore, Rejection

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from target_braze_audience.planning import Batch, Ops, RequestPlanner
    from target_braze_audience.settings import EngineSettings
    from target_braze_audience.summary import RunSummary

MAX_NAMED_REJECTIONS = 100
MAX_REFUSED_IN_A_ROW = 20
"""Single-object refusals without detail, with nothing accepted in between, that stop a run:
Braze is then refusing everything (a systemic cause), and splitting every request down to
single objects would cost two requests per user."""


def utcnow() -> dt.datetime:
    """Naive UTC now (the store's DateTime columns are naive)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class _SplitGroup:
    """Two halves of a request Braze refused without naming an object."""

    size: int
    left: int = 2
    all_accepted: bool = True


@dataclass
class _Sent:
    """One request's objects, and the split it is half of (if any)."""

    batch: Batch
    group: _SplitGroup | None = None


class BatchSizer:
    """Objects per request: `batch_size`, lowered to what the workspace accepts.

    Braze documents 75 objects per request, and 50 on some "Monthly Active Users"
    contracts; what it answers past such a limit is not documented (a 400 or 413 without
    per-object detail is assumed). A request refused without detail is split in two
    (:meth:`Delivery._refused`); when both halves are accepted, the refusal was for
    its size, not for an object in it, and requests that big are not sent again this
    run. The size then settles by bisection between the largest accepted size and the
    smallest refused one; each probe costs at most one refused request.
    """

    def __init__(self, configured: int, logger: logging.Logger) -> None:
        """Start at the configured `batch_size`."""
        self.configured = configured
        self.largest_ok = 0
        self.too_big: int | None = None
        self.logger = logger
        self._settled = False
        self._open_groups = 0

    def careful(self) -> bool:
        """Whether to send one request at a time: a refusal's cause is being worked out.

        Requests formed ahead at a size being probed would all be refused alike.
        """
        return self._open_groups > 0 or (self.too_big is not None and not self._settled)

    def working_size(self) -> int:
        """Return the largest size known to work (`batch_size` until a refusal for size)."""
        return self.configured if self.too_big is None else max(self.largest_ok, 1)

    def size(self) -> int:
        """Objects to put in the next request."""
        if self.too_big is None:
            return self.configured
        lo = max(self.largest_ok, 1)
        return lo if self.too_big - lo <= 1 else (lo + self.too_big) // 2

    def split(self, sent: _Sent) -> _SplitGroup | None:
        """Start tracking whether a split request was refused for its size."""
        n = len(sent.batch)
        if n <= self.largest_ok:
            return None
        self._open_groups += 1
        return _SplitGroup(n)

    def _answered(self, group: _SplitGroup) -> None:
        group.left -= 1
        if group.left == 0:
            self._open_groups -= 1

    def refused(self, sent: _Sent) -> None:
        """Note a refused half: its parent's refusal is then explained by its content."""
        group = sent.group
        if group is not None:
            group.all_accepted = False
            self._answered(group)

    def accepted(self, sent: _Sent) -> None:
        """Braze accepted a request of len(sent.batch) objects."""
        n = len(sent.batch)
        if n > self.largest_ok and (self.too_big is None or n < self.too_big):
            self.largest_ok = n
        group = sent.group
        if group is not None:
            self._answered(group)
            self._half_accepted(group)
        if self.too_big is not None and not self._settled and self.size() == self.largest_ok:
            self._settled = True
            self.logger.warning(
                "batch_size settles at %d objects per request for this run (Braze refused "
                "%d). Set batch_size to %d to skip this probing on later runs.",
                self.largest_ok,
                self.too_big,
                self.largest_ok,
            )

    def _half_accepted(self, group: _SplitGroup) -> None:
        """Both halves accepted: the parent was refused for its size."""
        smaller = self.too_big is None or group.size < self.too_big
        size_was_cause = group.left == 0 and group.all_accepted
        if size_was_cause and smaller and group.size > self.largest_ok:
            self.too_big = group.size
            self._settled = False
            self.logger.warning(
                "Braze refused a request of %d objects whose halves it accepted: "
                "this workspace takes fewer objects per request than batch_size=%d",
                group.size,
                self.configured,
            )


class Delivery:
    """Sends planned requests in threads and records Braze's answers."""

    def __init__(
        self,
        settings: EngineSettings,
        store: MembershipStore,
        client: BrazeClient | None,
        planner: RequestPlanner,
        summary: RunSummary,
        logger: logging.Logger,
        stop: threading.Event,
    ) -> None:
        """Wire delivery; `client` may be None in dry run (then :meth:`run` is not called)."""
        self.s = settings
        self.store = store
        self.client = client
        self.planner = planner
        self.summary = summary
        self.logger = logger
        self.stop = stop
        self.sizer = BatchSizer(settings.batch_size, logger)
        self.delivering = False
        self.last_failure: str | None = None
        self._resend: deque[_Sent] = deque()
        self._named = 0
        self._refused_in_a_row = 0

    def run(self) -> None:
        """Send every pending/rejected delta, grouped per user, and record the answers."""
        assert self.client is not None
        self.delivering = True
        self.store.mark_attempted()
        self.store.commit()
        fatal: BaseException | None = None
        inflight: dict[Future[TrackResult], _Sent] = {}
        workers = self.s.max_concurrency
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="braze") as pool:
            try:
                fatal = self._pump(pool, inflight)
            finally:
                while inflight:
                    fatal = self._collect(inflight) or fatal
                self.delivering = False
        if fatal is not None:
            raise fatal

    def _pump(
        self, pool: ThreadPoolExecutor, inflight: dict[Future[TrackResult], _Sent]
    ) -> BaseException | None:
        """Submit requests until done, stopped, failed or a setting error (returned)."""
        client = self.client
        assert client is not None
        workers = self.s.max_concurrency
        batches = self.planner.batches(self.sizer.size)
        fatal: BaseException | None = None
        last_log = time.monotonic()
        while fatal is None and self._sending():
            sent = self._next(batches)
            if sent is None:
                if not inflight:
                    break
                fatal = self._collect(inflight) or fatal
                continue
            inflight[pool.submit(client.track, self.planner.payload(sent.batch))] = sent
            while len(inflight) >= (1 if self.sizer.careful() else workers * 2):
                fatal = self._collect(inflight) or fatal
            last_log = self._log_progress(last_log)
        return fatal

    def _sending(self) -> bool:
        """Whether to send more: not stopping, and no request failed after retries."""
        return not (self.stop.is_set() or self.summary.failed_requests)

    def _log_progress(self, last_log: float) -> float:
        """Log progress every 10 s; return when it was last logged."""
        if time.monotonic() - last_log <= 10:
            return last_log
        summary = self.summary
        self.logger.info(
            "Delivered %d requests (%d objects, %d values) so far",
            summary.requests,
            summary.objects_sent,
            summary.values_sent,
        )
        return time.monotonic()

    def _next(self, batches: Iterator[Batch]) -> _Sent | None:
        """Return the next request: a resend (split half, refusal's rest) first, else a new one."""
        if self._resend:
            return self._resend.popleft()
        batch = next(batches, None)
        return None if batch is None else _Sent(batch)

    def _collect(self, inflight: dict[Future[TrackResult], _Sent]) -> BaseException | None:
        """Wait for at least one request and apply every finished one to the store."""
        done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
        fatal: BaseException | None = None
        for fut in done:
            sent = inflight.pop(fut)
            try:
                res = fut.result()
            except BrazeSettingError as exc:
                self.stop.set()
                fatal = exc
                continue
            self._answered(sent, res)
        if done:
            self.store.commit()
        return fatal

    def _answered(self, sent: _Sent, res: TrackResult) -> None:
        """Apply Braze's answer to one request."""
        summary = self.summary
        summary.http_attempts += res.attempts
        summary.rate_limited += res.rate_limited
        if res.refused is not None:
            self._refused(sent, res)
        elif not res.ok and res.stopped:
            summary.stopped_requests += 1  # SIGTERM: not a failure; deltas stay pending
        elif not res.ok:
            summary.failed_requests += 1
            self.last_failure = res.error
            self.logger.error(
                "Request of %d objects not delivered (%s); they stay pending",
                len(sent.batch),
                res.error,
            )
        else:
            summary.requests += 1
            summary.queued_requests += res.queued
            self._refused_in_a_row = 0
            self.sizer.accepted(sent)
            self._record(sent.batch, res.rejected)

    def _refused(self, sent: _Sent, res: TrackResult) -> None:
        """Braze refused a whole request: reject what it named, resend or split the rest."""
        self.summary.refused_requests += 1
        self.sizer.refused(sent)
        batch = sent.batch
        named = {i: r for i, r in res.rejected.items() if i < len(batch)}
        if named:
            # Objects named in the refusal's `errors` are rejections like those of a 201;
            # Braze applied nothing else, so the others go again in a request of their own.
            picked = sorted(named)
            self._record([batch[i] for i in picked], {j: named[i] for j, i in enumerate(picked)})
            rest = [b for i, b in enumerate(batch) if i not in named]
            if rest:
                self._resend.append(_Sent(rest))
        elif len(batch) == 1:
            self._refused_alone(batch, res)
        else:
            self._split(sent, res)

    def _refused_alone(self, batch: Batch, res: TrackResult) -> None:
        """Isolated: this object alone is refused. A rejection naming the user."""
        self._record(batch, {0: f"Braze refused the request ({res.refused})"})
        self._refused_in_a_row += 1
        if self._refused_in_a_row >= MAX_REFUSED_IN_A_ROW:
            self.summary.failed_requests += 1
            self.logger.error(
                "Braze refused %d single-object requests in a row without naming a cause "
                "(last: %s) and accepted nothing in between: it is refusing every request, "
                "so delivery stops here; undelivered deltas stay pending",
                self._refused_in_a_row,
                res.refused,
            )

    def _split(self, sent: _Sent, res: TrackResult) -> None:
        """No per-object detail: split and retry the halves until the cause is isolated."""
        batch = sent.batch
        self.summary.split_requests += 1
        self.logger.info(
            "Braze refused a request of %d objects without naming any (%s): "
            "retrying it as two halves",
            len(batch),
            res.refused,
        )
        half = (len(batch) + 1) // 2
        group = self.sizer.split(sent)
        self._resend.appendleft(_Sent(batch[half:], group))
        self._resend.appendleft(_Sent(batch[:half], group))

    def _record(self, batch: Batch, rejected: t.Mapping[int, str]) -> None:
        """Record Braze's answer to the objects of one request in the store and summary."""
        accepted: list[Delta] = []
        rejects: list[Rejection] = []
        update_only: list[Membership] = []
        for idx, (user, ops, full) in enumerate(batch):
            reason = rejected.get(idx)
            if reason is None:
                self._count_accepted(user, ops, full, accepted, update_only)
            else:
                self.summary.rejected_objects += 1
                for aud, _op in ops:
                    rejects.append(Rejection(user, aud, reason))
                    self.summary.audiences[aud].rejected += 1
                self._name_rejection(user, ops, reason)
        self.store.record_results(accepted, rejects)
        if update_only:
            self.summary.update_only_gave_up += self.store.record_update_only(
                update_only,
                max_reoffers=self.s.update_only_reoffers,
                now=utcnow(),
            )

    def _count_accepted(
        self,
        user: str,
        ops: Ops,
        full: list[str] | None,
        accepted: list[Delta],
        update_only: list[Membership],
    ) -> None:
        """Count one accepted object; collect its store bookkeeping rows."""
        summary = self.summary
        summary.objects_sent += 1
        summary.values_sent += len(ops)
        if full is None:
            summary.delta_objects += 1
            summary.data_points += len(ops)
        else:
            summary.set_objects += 1
            summary.data_points += 1
            summary.data_points_saved += len(ops) - 1
        uo = self.s.update_existing_only
        for aud, op in ops:
            st = summary.audiences[aud]
            if op == REMOVE:
                st.removed += 1
                accepted.append(Delta(user, aud, REMOVE))
                continue
            accepted.append(Delta(user, aud, ADD))
            if op == ADD:
                st.added += 1
            if uo:
                st.update_only += 1
                update_only.append(Membership(user, aud))

    def _name_rejection(self, user: str, ops: Ops, reason: str) -> None:
        """Log a rejected user with Braze's reason (the first MAX_NAMED of a run)."""
        self._named += 1
        if self._named > MAX_NAMED_REJECTIONS:
            return
        change = ", ".join(f"{'remove' if op == REMOVE else 'add'} {aud}" for aud, op in ops)
        self.logger.warning(
            "Braze rejected user '%s' (%s): %s. Kept; retried on every later run.",
            user,
            change,
            reason,
        )

    def log_unnamed_rejections(self) -> None:
        """Say how many rejected users were not logged one by one (past the first 100)."""
        if self._named > MAX_NAMED_REJECTIONS:
            self.logger.warning(
                "... and %d more rejected users (not listed; the first %d are above)",
                self._named - MAX_NAMED_REJECTIONS,
                MAX_NAMED_REJECTIONS,
            )
