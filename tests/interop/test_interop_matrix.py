"""Our plugins mixed with widely used PyPI plugins, through real `meltano run`.

- our taps -> meltanolabs-target-postgres (singer-sdk 0.54.9, real PostgreSQL) and target-jsonl
  (singer-python): rows land, Meltano saves the state, a second run reads only what is new;
- meltanolabs-tap-postgres (INCREMENTAL on `id`) -> our targets: rows land in the Braze / Lytics
  emulators, the state is saved and a second run sends only the new rows.

The peers are pinned by hash in requirements/*.txt (see peers.yml and conftest.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from e2e_helpers import Meltano

pytestmark = pytest.mark.timeout(900)


def engine_for(pg_url: str) -> sa.Engine:
    return sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))


def run(meltano: Meltano, *blocks: str) -> str:
    """`meltano run <blocks>` (several tap/target pairs in one call: one meltano start-up)."""
    proc = meltano.run("run", *blocks)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc.stderr


def floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats(v)]
    return []


def saved_state(meltano: Meltano, tap: str, target: str) -> dict:
    state = meltano.state(f"interop:{tap}-to-{target}")
    assert state.get("singer_state"), f"meltano saved no state for {tap} -> {target}: {state}"
    return state["singer_state"]


# -- our taps into PyPI targets ----------------------------------------------------------


class Sink:
    """A PyPI target and how to read back what it loaded."""

    def __init__(self, name: str, meltano: Meltano, pg_url: str, tmp: Path) -> None:
        self.name = name
        self.meltano = meltano
        if name == "target-postgres":
            self.schema = f"interop_{uuid.uuid4().hex[:8]}"
            self.engine = engine_for(pg_url)
            meltano.set(
                TARGET_POSTGRES_SQLALCHEMY_URL=pg_url.replace(
                    "postgresql://", "postgresql+psycopg://", 1
                ),
                TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=self.schema,
                TARGET_POSTGRES_ADD_RECORD_METADATA="true",
            )
        else:
            self.out = tmp / "jsonl"
            meltano.set(
                TARGET_JSONL_DESTINATION_PATH=str(self.out), TARGET_JSONL_DO_TIMESTAMP_FILE="false"
            )

    def rows(self, stream: str) -> list[dict]:
        """Every row loaded for a stream (target-jsonl appends: one line per record received)."""
        if self.name == "target-postgres":
            with self.engine.connect() as conn:
                table = sa.table(stream, schema=self.schema)
                result = conn.execute(sa.select(sa.text("*")).select_from(table))
                return [dict(r._mapping) for r in result]
        path = self.out / f"{stream}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def close(self) -> None:
        if self.name == "target-postgres":
            self.engine.dispose()


@pytest.fixture(params=["target-postgres", "target-jsonl"])
def sink(
    request: pytest.FixtureRequest, interop: Meltano, pg_url: str, tmp_path: Path
) -> Iterator[Sink]:
    s = Sink(request.param, interop, pg_url, tmp_path)
    yield s
    s.close()


EXPORT_HEADER = "user_id,email,first_name,Lifetime Value\n"


def write_export(path: Path, rows: list[tuple[str, str]]) -> None:
    body = "".join(f"{uid},{uid}@example.com,Name {uid},{ltv}\n" for uid, ltv in rows)
    path.write_text(EXPORT_HEADER + body, encoding="utf-8")


def lytics_member(i: int) -> dict:
    return {"_uid": f"l{i}", "braze_id": f"u{i}"}


#: vip members without an id: keyed `lytics_uid:<uid>` (a null key could not be upserted)
VIP_NO_ID = [{"_uid": "lx"}, {"_uid": "ly"}]
VIP_KEYS = [("vip", f"u{i}", f"u{i}") for i in range(5)]
VIP_KEYS += [("vip", "lytics_uid:lx", None), ("vip", "lytics_uid:ly", None)]


def member_keys(rows: list[dict]) -> list[tuple]:
    return sorted(((r["audience_slug"], r["member_key"], r["external_id"]) for r in rows), key=str)


def test_our_taps_into_pypi_target(
    sink: Sink, interop: Meltano, lytics_sandbox: Any, tmp_path: Path
) -> None:
    """tap-braze-csv and tap-lytics-audience into one PyPI target, in one `meltano run`."""
    exports = tmp_path / "exports"
    exports.mkdir()
    write_export(exports / "VIP-2026-11-01.csv", [("u1", "12.5"), ("u2", "0.1"), ("u3", "")])
    write_export(exports / "VIP-2026-11-02.csv", [("u4", "1e3"), ("u5", "7")])
    lytics_sandbox.add_audience("vip", members=[*map(lytics_member, range(5)), *VIP_NO_ID])
    lytics_sandbox.add_audience("churn", members=[lytics_member(i) for i in range(3, 6)])
    interop.set(
        TAP_BRAZE_CSV_PATHS=[str(exports / "*.csv")],
        TAP_BRAZE_CSV_COLUMN_TYPES={"Lifetime Value": "number"},
        TAP_LYTICS_AUDIENCE_API_URL=lytics_sandbox.url,
        TAP_LYTICS_AUDIENCE_API_TOKEN=lytics_sandbox.api_token,
        TAP_LYTICS_AUDIENCE_AUDIENCES=["vip", "churn"],
    )
    jobs = ("tap-braze-csv", sink.name, "tap-lytics-audience", sink.name)
    run(interop, *jobs)

    rows = sink.rows("braze_users")
    assert sorted(r["external_id"] for r in rows) == ["u1", "u2", "u3", "u4", "u5"]
    # floats in records arrive exactly (SDK targets read them as Decimal, target-jsonl too)
    ltv = {r["external_id"]: r["lifetime_value"] for r in rows}
    assert {k: None if v is None else Decimal(str(v)) for k, v in ltv.items()} == {
        "u1": Decimal("12.5"),
        "u2": Decimal("0.1"),
        "u3": None,
        "u4": Decimal("1000"),
        "u5": Decimal("7"),
    }
    first_loaded = {r["external_id"]: r.get("_sdc_batched_at") for r in rows}
    churn_keys = [("churn", f"u{i}", f"u{i}") for i in range(3, 6)]
    assert member_keys(sink.rows("audience_members")) == sorted(VIP_KEYS + churn_keys, key=str)
    assert sorted(r["slug_name"] for r in sink.rows("audiences")) == ["churn", "vip"]
    snapshots = {r["audience_slug"]: r["member_count"] for r in sink.rows("audience_snapshots")}
    assert snapshots == {"vip": 7, "churn": 3}
    first_vip_scans = {
        r["scan_id"] for r in sink.rows("audience_members") if r["audience_slug"] == "vip"
    }

    # second run: the saved states are honoured. tap-braze-csv skips the two files read and
    # reads only the new one; tap-lytics-audience emits only the audience definition that
    # changed (members are a full snapshot on every run by design).
    write_export(exports / "VIP-2026-11-03.csv", [("u6", "2.25")])
    lytics_sandbox.set_members("churn", [lytics_member(9)])
    log = run(interop, *jobs)
    assert "Summary: 1 file(s) read, 2 skipped (already read)" in log
    assert " 1 row(s) emitted" in log
    rows = sink.rows("braze_users")
    assert sorted(r["external_id"] for r in rows) == ["u1", "u2", "u3", "u4", "u5", "u6"]
    if sink.name == "target-postgres":  # rows of the first run were not loaded again
        again = {r["external_id"]: r["_sdc_batched_at"] for r in rows if r["external_id"] != "u6"}
        assert again == first_loaded
    audiences = [r["slug_name"] for r in sink.rows("audiences")]
    if sink.name == "target-jsonl":  # append-only: one more line, for churn only
        assert sorted(audiences) == ["churn", "churn", "vip"]
    else:  # upserted on `id`
        assert sorted(audiences) == ["churn", "vip"]
    members = sink.rows("audience_members")
    assert ("churn", "u9", "u9") in member_keys(members)
    vip = [r for r in members if r["audience_slug"] == "vip"]
    if sink.name == "target-jsonl":  # append-only: vip's 7 members once per run
        assert member_keys(vip) == sorted(VIP_KEYS * 2, key=str)
    else:  # upserted on (audience_id, member_key): the members without an id too
        assert member_keys(vip) == sorted(VIP_KEYS, key=str)
        (scan,) = {r["scan_id"] for r in vip}  # every vip row updated by the second run
        assert {scan} != first_vip_scans

    # the state the stock target wrote back holds no float (a float crashed it: Decimal)
    state = saved_state(interop, "tap-braze-csv", sink.name)
    files = state["bookmarks"]["braze_users"]["files"]
    assert len(files) == 3
    assert all(f["complete"] for f in files)
    assert floats(state) == []


# -- a PyPI tap into our targets ---------------------------------------------------------


@pytest.fixture
def pg_source(interop: Meltano, pg_url: str) -> Iterator[sa.Engine]:
    """A fresh `public.memberships` table, read by tap-postgres INCREMENTAL on `id`."""
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS public.memberships"))
        conn.execute(
            sa.text(
                "CREATE TABLE public.memberships (id serial PRIMARY KEY, external_id text NOT NULL,"
                " audience_slug text NOT NULL, email text)"
            )
        )
    # tap-postgres insists on a password in the URL; the test server trusts loopback anyway
    url = sa.engine.make_url(pg_url).set(password="interop")
    interop.set(
        TAP_POSTGRES_SQLALCHEMY_URL=url.render_as_string(hide_password=False),
        TAP_POSTGRES_FILTER_SCHEMAS=["public"],
        TAP_POSTGRES__SELECT=["public-memberships.*"],
        TAP_POSTGRES__METADATA={
            "public-memberships": {"replication-method": "INCREMENTAL", "replication-key": "id"}
        },
    )
    yield engine
    engine.dispose()


def insert(engine: sa.Engine, rows: list[tuple[str, str]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO public.memberships (external_id, audience_slug, email) "
                "VALUES (:e, :a, :e || '@example.com')"
            ),
            [{"e": e, "a": a} for e, a in rows],
        )


def test_tap_postgres_into_our_targets(
    interop: Meltano, pg_source: sa.Engine, braze_sandbox: Any, lytics_sandbox: Any, tmp_path: Path
) -> None:
    """meltanolabs-tap-postgres into target-braze-audience and target-lytics-users."""
    insert(pg_source, [("u1", "vip"), ("u2", "vip"), ("u2", "churn")])
    interop.set(
        TARGET_BRAZE_AUDIENCE_REST_ENDPOINT=braze_sandbox.url,
        TARGET_BRAZE_AUDIENCE_API_KEY=braze_sandbox.api_key,
        TARGET_BRAZE_AUDIENCE_STORE_URL=str(tmp_path / "store.sqlite"),
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
        TARGET_LYTICS_USERS_STREAM="crm_members",
    )
    jobs = ("tap-postgres", "target-braze-audience", "tap-postgres", "target-lytics-users")
    run(interop, *jobs)
    segments = {u: sorted(a.get("lytics_segments") or []) for u, a in braze_sandbox.users().items()}
    assert segments == {"u1": ["vip"], "u2": ["churn", "vip"]}
    got = lytics_sandbox.collected("crm_members")
    assert sorted(r["external_id"] for r in got) == ["u1", "u2", "u2"]
    assert {r["email"] for r in got} == {"u1@example.com", "u2@example.com"}

    braze_sandbox.clear_requests()
    insert(pg_source, [("u3", "churn")])
    run(interop, *jobs)
    # Each pair has its own saved state (bookmark id 3). The SDK's incremental replication is
    # inclusive (`id >= bookmark`): the bookmarked row (u2, churn) comes again, rows 1-2 do not.
    sent = [
        obj
        for req in braze_sandbox.requests
        if req.path == "/users/track"
        for obj in req.json.get("attributes", [])
    ]
    assert [(o["external_id"], o["lytics_segments"]) for o in sent] == [("u3", {"add": ["churn"]})]
    segments = {u: sorted(a.get("lytics_segments") or []) for u, a in braze_sandbox.users().items()}
    assert segments == {"u1": ["vip"], "u2": ["churn", "vip"], "u3": ["churn"]}
    got = lytics_sandbox.collected("crm_members")
    assert sorted(r["external_id"] for r in got) == ["u1", "u2", "u2", "u2", "u3"]
