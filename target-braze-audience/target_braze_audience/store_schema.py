"""Tables of the membership store, and the values of its `op` and `status` columns.

Persistent tables (prefixed ``braze_`` so they can share a PostgreSQL database):

- ``braze_membership(audience, user_id, present)``: what Braze accepted. ``present``
  false is a tombstone for a confirmed ``remove``.
- ``braze_pending(user_id, audience, op, status, attempted, reason)``: deltas not yet
  confirmed. ``status`` is ``pending`` or ``rejected`` (with Braze's reason);
  ``attempted`` means a request carrying it may have reached Braze.
- ``braze_audience(audience, initialized, ...)``: audiences with a complete snapshot.
- ``braze_store_meta(key, value)``: the attribute and identifier the store was built for.
- ``braze_update_only(user_id, audience, offers, last_offer_at)``: adds sent with
  ``_update_existing_only`` that Braze may have silently skipped (unknown user); they
  are re-offered (op ``reoffer`` in ``braze_pending``) at doubling intervals, a bounded
  number of times, while the membership holds.
- ``braze_member_uid(audience, user_id, lytics_uid)``: the Lytics uid of stored members.

Run-scoped temporary tables: ``braze_seen_tmp`` (memberships seen this run, per
scan id, appended in arrival order; its lookup index is built only when a query needs
it), ``braze_kept_tmp`` (profiles seen without an identifier) and ``braze_incoming_tmp``
(the chunk being flushed).
"""

from __future__ import annotations

import sqlalchemy as sa

ADD = "add"
REMOVE = "remove"
REOFFER = "reoffer"
"""op of an `add` re-sent because an update-only add may have been skipped by Braze."""
PENDING = "pending"
REJECTED = "rejected"

metadata = sa.MetaData()
membership = sa.Table(
    "braze_membership",
    metadata,
    sa.Column("audience", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("present", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    sqlite_with_rowid=False,  # one B-tree per row instead of table + PK index
)
pending = sa.Table(
    "braze_pending",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("audience", sa.Text, primary_key=True),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("attempted", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    sqlite_with_rowid=False,
)
audience_tbl = sa.Table(
    "braze_audience",
    metadata,
    sa.Column("audience", sa.Text, primary_key=True),
    sa.Column("initialized", sa.Boolean, nullable=False),
    sa.Column("last_scan_id", sa.Text),
    sa.Column("last_member_count", sa.BigInteger),
    sa.Column("last_complete_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)
update_only = sa.Table(
    "braze_update_only",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("audience", sa.Text, primary_key=True),
    sa.Column("offers", sa.Integer, nullable=False),
    sa.Column("last_offer_at", sa.DateTime, nullable=False),
    sqlite_with_rowid=False,
)
member_uid = sa.Table(
    # Lytics `_uid` of each stored (audience, user): a profile seen in a scan without its id
    # keeps the memberships stored under its uid (see complete_snapshot).
    "braze_member_uid",
    metadata,
    sa.Column("audience", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("lytics_uid", sa.Text, nullable=False),
    sa.Index("braze_member_uid_by_uid", "audience", "lytics_uid"),
    sqlite_with_rowid=False,
)
meta_tbl = sa.Table(
    "braze_store_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

temp_metadata = sa.MetaData()
seen = sa.Table(
    "braze_seen_tmp",
    temp_metadata,
    # Rows are numbered in arrival order: a chunk's new rows are `seq > last`.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("audience", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("scan_id", sa.Text, nullable=False),
    sa.Column("lytics_uid", sa.Text),
    # No unique key: rows are appended in arrival order (a repeated mark is harmless, every
    # query reads them with DISTINCT/EXISTS). The (audience, user_id, scan_id) lookup index
    # is built by MembershipStore._index_seen only once a query needs it: maintaining it
    # row by row costs more than the whole rest of the insert on a fresh store.
    prefixes=["TEMPORARY"],
)
kept = sa.Table(
    # Profiles seen in a scan without an identifier, by Lytics `_uid` (few rows).
    "braze_kept_tmp",
    temp_metadata,
    sa.Column("audience", sa.Text, nullable=False),
    sa.Column("scan_id", sa.Text, nullable=False),
    sa.Column("lytics_uid", sa.Text, nullable=False),
    sa.Index("braze_kept_tmp_key", "audience", "lytics_uid"),
    prefixes=["TEMPORARY"],
)
incoming = sa.Table(
    "braze_incoming_tmp",
    temp_metadata,
    sa.Column("seq", sa.Integer),
    sa.Column("audience", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("scan_id", sa.Text),
    sa.Column("op", sa.String(8)),
    prefixes=["TEMPORARY"],
)
