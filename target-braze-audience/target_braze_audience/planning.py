"""Request planning: which pending users go together, and what each object says.

Reads the store's pending deltas, groups them per user into requests of the size delivery
asks for, decides per user between add/remove deltas and the complete array
(``array_write_mode: set_when_cheaper``), and builds the ``/users/track`` attribute
objects. Also counts what a dry run would send. Sending is :mod:`delivery`'s job.
"""

from __future__ import annotations

import typing as t

from target_braze_audience.store import ADD, REMOVE, AudienceOp, DeltaKind, MembershipStore

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from target_braze_audience.settings import EngineSettings
    from target_braze_audience.summary import RunSummary

Ops = list[AudienceOp]
Batch = list[tuple[str, Ops, list[str] | None]]
"""Objects of one request: (user, [(audience, op), ...], complete array or None).

With a complete array (`array_write_mode: set_when_cheaper`) the object assigns the whole
attribute (one data point); otherwise it carries the ops as add/remove (one per value).
The ops are what the store's bookkeeping records either way."""


class RequestPlanner:
    """Turns the store's pending deltas into requests (see :class:`Batch`)."""

    def __init__(self, settings: EngineSettings, store: MembershipStore) -> None:
        """Plan for `settings` from `store`'s pending deltas."""
        self.s = settings
        self.store = store
        self._known_audiences: list[str] | None = None

    def batches(self, size: Callable[[], int]) -> Iterator[Batch]:
        """Pending users in requests of `size()` objects (asked again after each request)."""
        batch: Batch = []
        want = size()
        plan = self._plan if self.s.set_mode else None
        for user, ops in self.store.iter_pending_users():
            batch.append((user, ops, None))
            if len(batch) >= want:
                yield plan(batch) if plan else batch
                batch = []
                want = size()
        if batch:
            yield plan(batch) if plan else batch

    def _plan(self, batch: Batch) -> Batch:
        """`set_when_cheaper`: complete arrays for users whose deltas cost more than 1.

        The complete array is what Braze must hold once this object applies: the
        memberships the store says Braze holds (so removals held by max_removal_fraction,
        and removals not sent this run, stay), minus the removes sent, plus the adds
        sent. One store query per request, not per user.

        A user leaving every audience keeps its remove deltas rather than an empty
        array: ``[]`` would also wipe values the store does not know about (written by
        someone else, or by an earlier request whose outcome was never confirmed), and
        Braze does not document whether an empty array clears the attribute; the saving
        (users leaving two or more audiences at once) is small.
        """
        wanted = [user for user, ops, _full in batch if len(ops) > 1]
        if not wanted:
            return batch
        if self._known_audiences is None:
            # Read once: a user's stored memberships change only when its own (single)
            # object is accepted, so those of users still to send are in audiences that
            # had members before delivery began. None (a first backfill): no queries.
            self._known_audiences = self.store.member_audiences()
        held = self.store.present_audiences(wanted, self._known_audiences)
        return [(user, ops, _complete_array(ops, held.get(user, ()))) for user, ops, _f in batch]

    def payload(self, batch: Batch) -> dict[str, t.Any]:
        """Return the `/users/track` request body for `batch`."""
        return {"attributes": [self.attribute_object(*entry) for entry in batch]}

    def attribute_object(
        self, user: str, ops: Ops, full: list[str] | None = None
    ) -> dict[str, t.Any]:
        """One user's attribute object: identifier, update-only flag, array or delta."""
        s = self.s
        if s.identifier_field == "user_alias":
            obj: dict[str, t.Any] = {
                "user_alias": {"alias_name": user, "alias_label": s.alias_label}
            }
            obj["_update_existing_only"] = s.update_existing_only
        else:
            obj = {s.identifier_field: user}
            if s.update_existing_only:
                obj["_update_existing_only"] = True
        obj[s.attribute_name] = full if full is not None else _delta(ops)
        return obj

    def count_dry_run(self, summary: RunSummary) -> dict[DeltaKind, int]:
        """Count in `summary` what delivery would send; return deltas per (aud, op, status).

        Counted in SQL rather than by reading every delta back: requests carry batch_size
        consecutive users, one object per user and one attribute value per delta.
        """
        users, breakdown = self.store.pending_breakdown()
        summary.requests += -(-users // self.s.batch_size)
        summary.objects_sent += users
        for (aud, op, _status), n in breakdown.items():
            summary.values_sent += n
            st = summary.audiences[aud]
            if op == ADD:
                st.added += n
            elif op == REMOVE:
                st.removed += n
            if op != REMOVE and self.s.update_existing_only:
                st.update_only += n
        summary.data_points = summary.values_sent
        if self.s.set_mode:
            # Which users would get their complete array needs their memberships: this
            # reads every pending delta back (delta mode's dry run needs two counts).
            self._count_set_objects(summary)
        summary.delta_objects = summary.objects_sent - summary.set_objects
        return breakdown

    def _count_set_objects(self, summary: RunSummary) -> None:
        for planned in self.batches(lambda: self.s.batch_size):
            for _user, ops, full in planned:
                if full is not None:
                    summary.set_objects += 1
                    summary.data_points_saved += len(ops) - 1
        summary.data_points -= summary.data_points_saved


def _complete_array(ops: Ops, held: t.Iterable[str]) -> list[str] | None:
    """Return the array a user with these ops must hold, or None to send deltas (see _plan)."""
    if len(ops) <= 1:
        return None
    removes = {aud for aud, op in ops if op == REMOVE}
    adds = [aud for aud, op in ops if op != REMOVE]
    sent = removes.union(adds)
    full = [aud for aud in held if aud not in sent] + adds
    return full or None  # everything removed: remove deltas (see _plan)


def _delta(ops: Ops) -> dict[str, list[str]]:
    """Return the add/remove object of `ops` (keys only when non-empty)."""
    change: dict[str, list[str]] = {}
    adds = [a for a, op in ops if op != REMOVE]
    removes = [a for a, op in ops if op == REMOVE]
    if adds:
        change["add"] = adds
    if removes:
        change["remove"] = removes
    return change
