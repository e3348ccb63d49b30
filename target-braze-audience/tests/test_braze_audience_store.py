"""The membership store, run against SQLite and PostgreSQL (`store_url` fixture)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from target_braze_audience.store import (
    MembershipStore,
    StoreBusyError,
    StoreMismatchError,
    audience_lock_key,
    resolve_store_url,
    safe_store_url,
)


def _deliver_all(store: MembershipStore) -> None:
    """Pretend Braze accepted every pending delta."""
    store.mark_attempted()
    accepted = [(u, a, op) for u, ops in store.iter_pending_users() for a, op in ops]
    store.record_results(accepted, [])
    store.commit()


def test_adds_then_snapshot_removes(store_url: str) -> None:
    st = MembershipStore(store_url)
    unchanged = st.add_seen([("a", "u1", "s1"), ("a", "u2", "s1"), ("b", "u1", "s1")])
    assert unchanged == {}
    assert [(u, a, o) for u, a, o, *_ in st.pending_rows()] == [
        ("u1", "a", "add"),
        ("u1", "b", "add"),
        ("u2", "a", "add"),
    ]
    out = st.complete_snapshot("a", "s1", baseline=False, member_count=2)
    assert out.removes == 0
    _deliver_all(st)
    assert st.memberships() == {("a", "u1"): True, ("a", "u2"): True, ("b", "u1"): True}
    assert st.pending_rows() == []
    st.close()

    # Next run: u2 left a, u3 entered; u1 unchanged.
    st = MembershipStore(store_url)
    unchanged = st.add_seen([("a", "u1", "s2"), ("a", "u3", "s2")])
    assert unchanged == {"a": 1}
    out = st.complete_snapshot("a", "s2", baseline=False, member_count=2)
    assert out.removes == 1
    rows = {(u, a): o for u, a, o, *_ in st.pending_rows()}
    assert rows == {("u3", "a"): "add", ("u2", "a"): "remove"}
    _deliver_all(st)
    assert st.memberships("a") == {("a", "u1"): True, ("a", "u2"): False, ("a", "u3"): True}
    assert st.initialized_audiences() == {"a"}
    st.close()


def test_snapshot_is_scan_specific(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s0"), ("a", "u2", "s0")])
    _deliver_all(st)
    # A restarted pass: u2 only seen in the aborted pass s1, the complete pass s2 has u1.
    st.add_seen([("a", "u2", "s1"), ("a", "u1", "s2")])
    out = st.complete_snapshot("a", "s2", baseline=False, member_count=1)
    assert out.removes == 1
    assert {(u, o) for u, _a, o, *_ in st.pending_rows()} == {("u2", "remove")}
    # Without a scan id, every record of the run counts: nobody to remove.
    st.close()
    st2 = MembershipStore(store_url)
    st2.add_seen([("a", "u2", ""), ("a", "u1", "")])
    assert st2.complete_snapshot("a", None, baseline=False).removes == 0
    st2.close()


def test_snapshot_drops_adds_not_backed_by_its_scan(store_url: str) -> None:
    # Same run, fresh store: u2's add came from an aborted pass (s1), u3's from an
    # explicit delta; the complete pass s2 has only u1 (seen twice). Only u1 stays queued.
    st = MembershipStore(store_url)
    st.add_seen([("a", "u2", "s1"), ("a", "u1", "s2"), ("a", "u1", "s2")])
    st.apply_explicit([("u3", "a", "add"), ("u3", "b", "add")])
    out = st.complete_snapshot("a", "s2", baseline=False, member_count=1)
    assert out.removes == 0
    assert out.dropped_adds == 2
    assert {(u, a, o) for u, a, o, *_ in st.pending_rows()} == {
        ("u1", "a", "add"),
        ("u3", "b", "add"),
    }
    # A repeated mark neither duplicates a delta nor counts twice as unchanged next run.
    _deliver_all(st)
    st.close()
    st = MembershipStore(store_url)
    assert st.add_seen([("a", "u1", "s3"), ("a", "u1", "s3"), ("a", "u4", "s3")]) == {"a": 1}
    assert [(u, a, o) for u, a, o, *_ in st.pending_rows()] == [("u4", "a", "add")]
    st.close()


def test_silent_baseline(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1"), ("a", "u2", "s1")], silent_audiences={"a"})
    assert st.pending_rows() == []
    out = st.complete_snapshot("a", "s1", baseline=True, member_count=2)
    assert out.baseline == 2
    assert out.removes == 0
    st.commit()
    assert st.memberships() == {("a", "u1"): True, ("a", "u2"): True}
    st.close()


def test_rejected_kept_with_reason_and_retried(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1"), ("a", "u2", "s1")])
    st.mark_attempted()
    st.record_results([("u1", "a", "add")], [("u2", "a", "blacklisted")])
    st.commit()
    st.close()
    st = MembershipStore(store_url)
    assert st.pending_rows() == [("u2", "a", "add", "rejected", True, "blacklisted")]
    # Still pending for delivery next run.
    assert list(st.iter_pending_users()) == [("u2", [("a", "add")])]
    # If u2 left the audience meanwhile, the rejected add is dropped (Braze never had it).
    st.add_seen([("a", "u1", "s2")])
    out = st.complete_snapshot("a", "s2", baseline=False, member_count=1)
    assert out.dropped_adds == 1
    assert st.pending_rows() == []
    st.close()


def test_attempted_add_of_user_who_left_becomes_remove(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1")])
    st.mark_attempted()  # request sent, outcome unknown (crash)
    st.commit()
    st.close()
    st = MembershipStore(store_url)
    st.add_seen([("a", "u9", "s2")])
    st.complete_snapshot("a", "s2", baseline=False, member_count=1)
    rows = {(u, o) for u, _a, o, *_ in st.pending_rows()}
    assert rows == {("u1", "remove"), ("u9", "add")}
    st.close()


def test_member_seen_again_cancels_pending_remove(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1")])
    _deliver_all(st)
    st.add_seen([], ())
    st.complete_snapshot("a", "s2", baseline=False, member_count=0)
    assert [(u, o) for u, _a, o, *_ in st.pending_rows()] == [("u1", "remove")]
    st.commit()
    st.close()
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s3")])
    assert st.pending_rows() == []
    st.close()


def test_explicit_deltas(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1")])
    _deliver_all(st)
    counts = st.apply_explicit(
        [
            ("u1", "a", "add"),
            ("u1", "b", "add"),
            ("u2", "a", "remove"),
            ("u3", "c", "add"),
            ("u3", "c", "remove"),
        ]
    )
    assert counts["a"] == {"add": 0, "remove": 1, "skipped": 1}
    rows = {(u, a): o for u, a, o, *_ in st.pending_rows()}
    assert rows == {("u1", "b"): "add", ("u2", "a"): "remove", ("u3", "c"): "remove"}
    _deliver_all(st)
    # Known-removed membership: a replayed remove is skipped.
    st.apply_explicit([("u2", "a", "remove")])
    assert st.pending_rows() == []
    st.close()


def test_keyset_pages_keep_users_whole(store_url: str) -> None:
    st = MembershipStore(store_url)
    rows = [(aud, f"u{i:03d}", "s") for i in range(50) for aud in ("a", "b", "c")]
    st.add_seen(rows)
    groups = list(st.iter_pending_users(page_size=7))
    assert len(groups) == 50
    assert all(ops == [("a", "add"), ("b", "add"), ("c", "add")] for _u, ops in groups)
    assert [u for u, _ in groups] == sorted(u for u, _ in groups)
    st.close()


def test_dry_run_changes_nothing(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.add_seen([("a", "u1", "s1")])
    _deliver_all(st)
    st.close()
    dry = MembershipStore(store_url, dry_run=True)
    dry.add_seen([("a", "u2", "s1")])
    dry.complete_snapshot("a", "s1", baseline=False, member_count=1)
    _deliver_all(dry)
    dry.close()
    st = MembershipStore(store_url)
    assert st.memberships() == {("a", "u1"): True}
    assert st.pending_rows() == []
    assert st.initialized_audiences() == set()
    st.close()


def test_dry_run_never_creates_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"
    dry = MembershipStore(str(path), dry_run=True)
    dry.add_seen([("a", "u1", "s1")])
    dry.close()
    assert not path.exists()


def test_meta_mismatch_names_the_setting(store_url: str) -> None:
    st = MembershipStore(store_url)
    st.check_meta(attribute_name="lytics_segments", identifier_field="external_id")
    st.commit()
    st.close()
    st = MembershipStore(store_url)
    with pytest.raises(StoreMismatchError, match="attribute_name"):
        st.check_meta(attribute_name="other", identifier_field="external_id")
    st.close()


def test_postgres_runs_share_the_store_and_hold_audiences(pg_store_url: str) -> None:
    # Two runs (two PostgreSQL sessions) at once: each holds its audiences, the second is
    # refused the first's audience naming that run, and each sees only its own deltas.
    first = MembershipStore(pg_store_url)
    assert first.claim("a") is None
    first.add_seen([("a", "u1", "s1")])
    first.commit()
    second = MembershipStore(pg_store_url)
    assert second.claim("b") is None
    holder = second.claim("a")
    assert holder is not None
    assert f"target-braze-audience pid={os.getpid()} " in holder
    assert "PostgreSQL backend" in holder
    second.add_seen([("b", "u2", "s1")])
    second.commit()
    second.mark_attempted()
    assert list(second.iter_pending_users()) == [("u2", [("b", "add")])]
    assert second.pending_counts() == {"b": {"pending": 1}}
    assert second.pending_breakdown() == (1, {("b", "add", "pending"): 1})
    second.commit()
    # The other run's delta was not flagged as attempted by this run.
    assert ("u1", "a", "add", "pending", False, None) in first.pending_rows()
    assert second.claim_leftovers() == {"a": holder}  # busy: left to its holder
    # Leftovers of an audience nobody holds are taken (a single runner always did this).
    first.close()
    third = MembershipStore(pg_store_url)
    busy = third.claim_leftovers()
    assert list(busy) == ["b"]
    assert list(third.iter_pending_users()) == [("u1", [("a", "add")])]
    third.close()
    second.close()


def test_postgres_audience_taken_over_sees_what_the_other_run_left(pg_store_url: str) -> None:
    # A run opened before another run queued a remove in an audience, and that takes the
    # audience afterwards, must still cancel that remove when the member is seen again.
    seed = MembershipStore(pg_store_url)
    assert seed.claim("a") is None
    seed.add_seen([("a", "u1", "s1"), ("a", "u2", "s1")])
    seed.complete_snapshot("a", "s1", baseline=False)
    _deliver_all(seed)
    seed.commit()
    seed.close()
    late = MembershipStore(pg_store_url)  # opens while nothing is pending
    other = MembershipStore(pg_store_url)
    assert other.claim("a") is None
    other.add_seen([("a", "u1", "s2")])
    other.complete_snapshot("a", "s2", baseline=False)  # u2 left: a remove is queued
    other.commit()
    other.close()
    assert late.claim("a") is None
    assert [(u, o) for u, _a, o, *_ in late.pending_rows()] == [("u2", "remove")]
    late.add_seen([("a", "u1", "s3"), ("a", "u2", "s3")])  # u2 is back
    assert late.pending_rows() == []
    assert late.is_initialized("a")
    late.close()


def test_postgres_exclusive_run_has_the_store_to_itself(pg_store_url: str) -> None:
    normal = MembershipStore(pg_store_url)
    normal.commit()
    with pytest.raises(StoreBusyError, match=r"needs the store to itself \(exclusive\)") as exc:
        MembershipStore(pg_store_url, exclusive=True)
    assert f"pid={os.getpid()} " in str(exc.value)
    MembershipStore(pg_store_url, dry_run=True).close()  # a dry run takes no lock
    normal.close()
    exclusive = MembershipStore(pg_store_url, exclusive=True)
    exclusive.commit()
    with pytest.raises(
        StoreBusyError, match=r"Another run is using the membership store .* exclusively"
    ):
        MembershipStore(pg_store_url)
    with pytest.raises(StoreBusyError, match="exclusive"):
        MembershipStore(pg_store_url, exclusive=True)
    MembershipStore(pg_store_url, dry_run=True).close()
    assert exclusive.claim("a") is None  # the whole store is its own: no per-audience lock
    assert exclusive.claim_leftovers() == {}
    exclusive.close()
    MembershipStore(pg_store_url).close()


def test_audience_lock_key_is_stable() -> None:
    # The key must be the same in every process (unlike Python's salted hash()).
    assert audience_lock_key("vip") == audience_lock_key("vip")
    assert audience_lock_key("vip") != audience_lock_key("vip2")
    assert 0 <= audience_lock_key("x" * 10_000) < 2**31
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from target_braze_audience.store import audience_lock_key as k;print(k('vip'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == audience_lock_key("vip")


def test_url_resolution(tmp_path: Path) -> None:
    assert resolve_store_url(None, cwd=tmp_path).database == str(
        tmp_path / ".braze_audience_store.sqlite"
    )
    assert resolve_store_url("x/y.db", cwd=tmp_path).database == str(tmp_path / "x/y.db")
    url = resolve_store_url("postgresql://u:secretpw@h/db")
    assert url.drivername == "postgresql+psycopg"
    assert "secretpw" not in url.render_as_string(hide_password=True)
    with pytest.raises(ValueError, match="store_url"):
        resolve_store_url("mysql://h/db")


def test_postgres_url_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg is the optional `postgres` extra: a PostgreSQL store_url without it says how to fix."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"target-braze-audience\[postgres\]"):
        resolve_store_url("postgresql://u:secretpw@h/db")
    with pytest.raises(ValueError, match=r"target-braze-audience\[postgres\]"):
        resolve_store_url("host=h dbname=d password=secretpw")
    # SQLite needs no extra.
    assert resolve_store_url("x.db").drivername == "sqlite+pysqlite"


@pytest.mark.parametrize(
    ("store_url", "shown"),
    [
        ("postgresql://u:pw1secret@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql://u@h/db?password=pw1secret&sslpassword=pw2secret&sslmode=require",
            "postgresql+psycopg://u@h/db?password=***&sslmode=require&sslpassword=***",
        ),
        (
            "postgresql://h/db?dbname=host%3Dh%20password%3Dpw1secret",
            "postgresql+psycopg://h/db?dbname=***",
        ),
        (
            "host=h dbname=d user=u password='pw1 secret'",
            "postgresql+psycopg://?dbname=d&host=h&password=***&user=u",
        ),
    ],
)
def test_every_libpq_password_form_is_masked(store_url: str, shown: str) -> None:
    assert safe_store_url(resolve_store_url(store_url)) == shown


def test_unparsable_store_url_is_refused_without_its_value(tmp_path: Path) -> None:
    for bad in ("postgresql://u:pw1secret@h:port/db", "host=h password='pw1secret"):
        with pytest.raises(ValueError, match="`store_url`") as info:
            resolve_store_url(bad)
        assert "pw1secret" not in str(info.value)
        assert info.value.__context__ is None or info.value.__suppress_context__


def test_libpq_key_value_store_url_connects(pg_store_url: str) -> None:
    url = resolve_store_url(pg_store_url)
    dsn = f"host={url.host} port={url.port} dbname={url.database} user={url.username}"
    store = MembershipStore(dsn + " password=kv-secret-1")
    assert "kv-secret-1" not in store.display_url
    assert store.display_url.startswith("postgresql+psycopg://")
    store.close()


def test_postgres_plans_snapshot_with_statistics_of_the_seen_marks(pg_store_url: str) -> None:
    """The snapshot's anti-join is planned for the real number of marks, not for one row.

    Without statistics on the temporary table PostgreSQL estimated an audience's marks at one
    row and nested-looped over them: quadratic per audience (minutes at 300,000 memberships).
    """
    n = 3000
    st = MembershipStore(pg_store_url)
    rows = [("a", f"u{i}", "s1") for i in range(n)]
    for start in range(0, n, 1000):
        st.add_seen(rows[start : start + 1000], silent_audiences={"a"})
    st.complete_snapshot("a", "s1", baseline=True, member_count=n)
    assert st.conn.exec_driver_sql(
        "SELECT count(*) FROM pg_stats WHERE tablename = 'braze_seen_tmp'"
    ).scalar()
    plan = st.conn.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) SELECT count(*) FROM braze_seen_tmp "
        "WHERE audience = 'a' AND scan_id = 's1'"
    ).scalar()
    estimate = plan[0]["Plan"]["Plans"][0]["Plan Rows"]
    assert n / 2 <= estimate <= n * 2
    # The second run (unchanged members) on the stored, analyzed membership.
    st.commit()
    st.close()
    st = MembershipStore(pg_store_url)
    for start in range(0, n, 1000):
        assert st.add_seen([(a, u, "s2") for a, u, _ in rows[start : start + 1000]]) == {"a": 1000}
    out = st.complete_snapshot("a", "s2", baseline=False, member_count=n)
    assert (out.removes, out.held) == (0, 0)
    assert st.pending_rows() == []
    st.close()


def test_results_of_many_deltas_applied_in_batches(store_url: str) -> None:
    """Answers spanning several VALUES statements all land; a delta named twice takes its last."""
    n = 2 * MembershipStore.VALUES_ROWS + 7
    st = MembershipStore(store_url)
    st.add_seen([("a", f"u{i}", "s1") for i in range(n)] + [("b", "u0", "s1")])
    st.mark_attempted()
    accepted = [(f"u{i}", "a", "add") for i in range(n - 5)] + [("u0", "a", "remove")]
    rejected = [(f"u{i}", "a", "bad") for i in range(n - 5, n)] + [
        ("u0", "b", "x"),
        ("u0", "b", "y"),
    ]
    st.record_results(accepted, rejected)
    now = dt.datetime(2026, 1, 1)
    pairs = [(f"u{i}", "a") for i in range(1, n - 5)]
    assert st.record_update_only(pairs, max_reoffers=1, now=now) == 0
    assert st.record_update_only(pairs[:3], max_reoffers=1, now=now) == 3  # bound reached
    st.commit()
    held = st.memberships("a")
    assert len(held) == n - 5
    assert held[("a", "u0")] is False  # the later answer (remove) wins
    assert all(held[("a", f"u{i}")] for i in range(1, n - 5))
    assert sorted(st.pending_rows()) == sorted(
        [(f"u{i}", "a", "add", "rejected", True, "bad") for i in range(n - 5, n)]
        + [("u0", "b", "add", "rejected", True, "y")]
    )
    left = st.conn.exec_driver_sql("SELECT count(*) FROM braze_update_only").scalar()
    assert left == len(pairs) - 3
    due = st.queue_reoffers(
        now + dt.timedelta(days=1), enabled=True, max_reoffers=1, first_delay=dt.timedelta(hours=1)
    )
    assert due == {"a": len(pairs) - 3}
    st.close()


def test_postgres_probes_each_chunk_row_instead_of_scanning_the_store(pg_store_url: str) -> None:
    """A chunk is matched to what Braze holds by primary-key probes, never a scan of it all.

    Joined, the planner chose a hash join over a sequential scan of braze_membership for every
    chunk of 10,000 rows: a run's cost grew with the store times the number of chunks.
    """
    st = MembershipStore(pg_store_url)
    rows = [("a", f"u{i}", "s1") for i in range(3000)]
    st.add_seen(rows, silent_audiences={"a"})
    st.complete_snapshot("a", "s1", baseline=True, member_count=len(rows))
    st.commit()
    st.close()
    st = MembershipStore(pg_store_url)
    st.conn.exec_driver_sql("LOAD 'auto_explain'")
    st.conn.exec_driver_sql("SET auto_explain.log_min_duration = 0")
    st.conn.exec_driver_sql("SET auto_explain.log_level = NOTICE")
    st.conn.exec_driver_sql("SET client_min_messages = NOTICE")
    plans: list[str] = []
    raw = st.conn.connection.dbapi_connection
    raw.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    assert st.add_seen([(a, u, "s2") for a, u, _ in rows[:200]]) == {"a": 200}
    st.add_seen([("a", "new1", "s2")])  # a row Braze lacks: the INSERT of adds runs too
    chunk_plans = [p for p in plans if "braze_seen_tmp" in p and "braze_membership" in p]
    assert chunk_plans
    assert not [p for p in chunk_plans if "Seq Scan on braze_membership" in p]
    assert [u for u, _a, _o, *_ in st.pending_rows()] == ["new1"]
    st.close()


def test_sqlite_chunk_reads_only_its_own_marks(tmp_path: Path) -> None:
    """A chunk's statements read its rowid range of the seen marks, never all of them.

    Once the marks' lookup index exists (from the first complete snapshot on), SQLite
    planned `seq > last` as a scan of that whole covering index: every chunk read every
    mark so far, quadratic over a first sync of several audiences.
    """
    st = MembershipStore(str(tmp_path / "store.sqlite"))
    st.add_seen([("a", f"u{i}", "s1", f"l{i}") for i in range(50)])
    st.complete_snapshot("a", "s1", baseline=False, member_count=50)  # builds the index
    statements: list[tuple[str, t.Any]] = []

    @sa.event.listens_for(st.conn, "before_cursor_execute")
    def _capture(_c: t.Any, _cur: t.Any, stmt: str, params: t.Any, _ctx: t.Any, many: bool) -> None:
        if "braze_seen_tmp AS new" in stmt and not many:
            statements.append((stmt, params))

    st.add_seen([("b", f"u{i}", "s1", f"l{i}") for i in range(50)])
    sa.event.remove(st.conn, "before_cursor_execute", _capture)
    assert statements
    for stmt, params in statements:
        plan = [r[3] for r in st.conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params)]
        assert not [p for p in plan if p.startswith("SCAN new")], (stmt, plan)
    assert {(u, a, o) for u, a, o, *_ in st.pending_rows()} == {
        (f"u{i}", aud, "add") for i in range(50) for aud in ("a", "b")
    }
    st.close()
