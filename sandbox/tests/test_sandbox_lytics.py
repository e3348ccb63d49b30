"""LyticsSandbox against the documented segment/scan/collect contract (SANDBOX_API.md, issue 2)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import tracemalloc
from typing import Any
from urllib.parse import quote

import pytest

from sandbox import LyticsSandbox

AUTH = {"Authorization": "sandbox-lytics-token"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def members(n: int, prefix: str = "m") -> list[dict[str, Any]]:
    return [
        {
            "_uid": f"lu{i}",
            "braze_id": f"{prefix}{i}",
            "email": f"{prefix}{i}@x.io",
            "first_name": f"F{i}",
        }
        for i in range(n)
    ]


def scan_all(
    http: Any,
    lyt: LyticsSandbox,
    ident: str,
    limit: int | None = None,
    key: str = "_next",
    **params: str,
) -> tuple[list[dict], list[Any]]:
    """Scan to the end; returns (profiles, replies)."""
    out: list[dict] = []
    replies = []
    start = ""
    while True:
        q = dict(params)
        if limit is not None:
            q["limit"] = str(limit)
        if start:
            q["start"] = start
        qs = "&".join(f"{k}={quote(v)}" for k, v in q.items())
        r = http(f"{lyt.url}/api/segment/{ident}/scan?{qs}", headers=AUTH)
        assert r.status == 200, r.body
        replies.append(r)
        out.extend(r.json["data"])
        if key not in r.json:
            return out, replies
        start = r.json[key]


# ---- auth ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "wrong-token-9"}, {"Authorization": "Bearer sandbox-lytics-token"}],
)
def test_raw_token_auth(http, lytics_sandbox, headers) -> None:
    for path, method, body in (
        ("/api/segment?table=user", "GET", None),
        ("/collect/json/s", "POST", {"a": 1}),
    ):
        r = http(lytics_sandbox.url + path, method, body, headers)
        assert r.status == 401
        assert r.json["status"] == 401
        assert r.json["data"] is None
        assert b"wrong-token-9" not in r.body
        assert b"sandbox-lytics-token" not in r.body
    assert lytics_sandbox.collected("s") == []
    assert http(lytics_sandbox.url + "/api/segment", headers=AUTH).status == 200


# ---- segments --------------------------------------------------------------------------
def test_list_segments_envelope(http, lytics_sandbox) -> None:
    aid = lytics_sandbox.add_audience(
        "high_value", name="High value", members=members(3), description="d"
    )
    lytics_sandbox.add_audience("churn", members=[])
    r = http(lytics_sandbox.url + "/api/segment?table=user", headers=AUTH)
    assert r.status == 200
    assert r.json["status"] == 200
    assert r.json["message"] == "success"
    segs = {s["slug_name"]: s for s in r.json["data"]}
    assert set(segs) == {"high_value", "churn"}
    hv = segs["high_value"]
    assert re.fullmatch(r"[0-9a-f]{32}", aid)
    assert hv["id"] == aid
    assert hv["name"] == "High value"
    assert hv["description"] == "d"
    assert hv["table"] == "user"
    assert hv["tags"] == []
    assert {"kind", "is_public", "segment_ql"} <= set(hv)
    assert RFC3339.match(hv["created"])
    assert RFC3339.match(hv["updated"])
    assert http(lytics_sandbox.url + "/api/segment?table=content", headers=AUTH).json["data"] == []
    assert len(http(lytics_sandbox.url + "/api/segment", headers=AUTH).json["data"]) == 2


def test_get_segment_by_id_and_slug_and_404(http, lytics_sandbox) -> None:
    aid = lytics_sandbox.add_audience("high_value", members=members(2))
    by_slug = http(f"{lytics_sandbox.url}/api/segment/high_value", headers=AUTH)
    by_id = http(f"{lytics_sandbox.url}/api/segment/{aid}", headers=AUTH)
    assert by_slug.status == by_id.status == 200
    assert by_slug.json["data"] == by_id.json["data"]
    assert by_id.json["data"]["slug_name"] == "high_value"
    missing = http(f"{lytics_sandbox.url}/api/segment/nope", headers=AUTH)
    assert missing.status == 404
    assert missing.json["status"] == 404
    assert missing.json["data"] is None
    assert http(f"{lytics_sandbox.url}/api/segment/nope/scan", headers=AUTH).status == 404


def test_set_members_bumps_updated_and_remove_audience(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("a", members=members(2))
    before = lytics_sandbox.audience("a")["updated"]
    lytics_sandbox.set_members("a", members(5))
    assert lytics_sandbox.audience("a")["updated"] > before
    got, _ = scan_all(http, lytics_sandbox, "a")
    assert len(got) == 5
    lytics_sandbox.remove_audience("a")
    assert http(f"{lytics_sandbox.url}/api/segment/a", headers=AUTH).status == 404


# ---- scan ------------------------------------------------------------------------------
def test_scan_pages_to_the_end_in_stable_order(http, lytics_sandbox) -> None:
    ms = members(25)
    aid = lytics_sandbox.add_audience("hv", members=ms)
    got, replies = scan_all(http, lytics_sandbox, aid, limit=10)
    assert got == ms
    assert [len(r.json["data"]) for r in replies] == [10, 10, 5]
    assert all(r.json["total"] == 25 for r in replies)
    assert all(r.json["status"] == 200 and r.json["message"] == "success" for r in replies)
    assert "_next" not in replies[-1].json
    assert "next" not in replies[-1].json
    assert lytics_sandbox.stats["scan_pages"] == 3
    assert lytics_sandbox.stats["members_served"] == 25


def test_scan_default_limit_10_and_clamp_100(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(250))
    first = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH)
    assert len(first.json["data"]) == 10
    big = http(f"{lytics_sandbox.url}/api/segment/hv/scan?limit=1000", headers=AUTH)
    assert len(big.json["data"]) == 100
    got, replies = scan_all(http, lytics_sandbox, "hv", limit=500)
    assert [len(r.json["data"]) for r in replies] == [100, 100, 50]
    assert len({m["_uid"] for m in got}) == 250


def test_scan_exact_multiple_has_no_cursor_on_last_page(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(20))
    _, replies = scan_all(http, lytics_sandbox, "hv", limit=10)
    assert [len(r.json["data"]) for r in replies] == [10, 10]
    assert "_next" not in replies[-1].json


def test_scan_empty_audience(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("empty")
    r = http(f"{lytics_sandbox.url}/api/segment/empty/scan", headers=AUTH)
    assert r.json["data"] == []
    assert r.json["total"] == 0
    assert "_next" not in r.json


def test_cursor_key_switch(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(15))
    r = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH)
    assert "_next" in r.json
    assert "next" not in r.json
    lytics_sandbox.cursor_key = "next"
    r = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH)
    assert "next" in r.json
    assert "_next" not in r.json
    got, _ = scan_all(http, lytics_sandbox, "hv", key="next")
    assert len(got) == 15
    assert (
        http(lytics_sandbox.url + "/_sandbox/cursor_key", "POST", {"cursor_key": "_next"}).status
        == 200
    )
    assert "_next" in http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).json


def test_cursor_is_opaque_base64(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(15))
    cur = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).json["_next"]
    base64.urlsafe_b64decode(
        cur + "=" * (-len(cur) % 4)
    )  # decodes, content is not part of the contract
    assert "hv" not in cur


def test_fields_filter(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(3))
    got, _ = scan_all(http, lytics_sandbox, "hv", fields="braze_id,email,missing_field")
    assert got == [{"braze_id": f"m{i}", "email": f"m{i}@x.io"} for i in range(3)]


@pytest.mark.parametrize(
    "bad",
    ["garbage!!", base64.urlsafe_b64encode(b'["x",1,0,0,0]').decode(), "expired", "other-audience"],
)
def test_invalid_or_expired_cursor_is_400(http, lytics_sandbox, bad) -> None:
    lytics_sandbox.add_audience("hv", members=members(30))
    lytics_sandbox.add_audience("other", members=members(30))
    if bad == "expired":
        bad = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).json["_next"]
        lytics_sandbox.expire_cursors()
    elif bad == "other-audience":
        bad = http(f"{lytics_sandbox.url}/api/segment/other/scan", headers=AUTH).json["_next"]
    r = http(f"{lytics_sandbox.url}/api/segment/hv/scan?start={quote(bad)}", headers=AUTH)
    assert r.status == 400
    assert r.json == {"status": 400, "message": "invalid or expired scan cursor", "data": None}


def test_cursor_ttl_expiry(http) -> None:
    with LyticsSandbox(cursor_ttl=0.2) as lyt:
        lyt.add_audience("hv", members=members(30))
        cur = http(f"{lyt.url}/api/segment/hv/scan", headers=AUTH).json["_next"]
        assert http(f"{lyt.url}/api/segment/hv/scan?start={cur}", headers=AUTH).status == 200
        time.sleep(0.3)
        assert http(f"{lyt.url}/api/segment/hv/scan?start={cur}", headers=AUTH).status == 400


def test_membership_change_invalidates_open_scan(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(30))
    cur = http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).json["_next"]
    lytics_sandbox.set_members("hv", members(31))
    assert http(f"{lytics_sandbox.url}/api/segment/hv/scan?start={cur}", headers=AUTH).status == 400


def test_generate_members_large_audience_pages_lazily(http, lytics_sandbox) -> None:
    aid = lytics_sandbox.generate_members("big", 100_000, prefix="user")
    seg = http(f"{lytics_sandbox.url}/api/segment/{aid}", headers=AUTH).json["data"]
    assert seg["slug_name"] == "big"
    count = 0
    first = last = None
    start = ""
    while True:
        url = f"{lytics_sandbox.url}/api/segment/big/scan?limit=100" + (
            f"&start={start}" if start else ""
        )
        body = http(url, headers=AUTH).json
        assert body["total"] == 100_000
        if first is None:
            first = body["data"][0]
        count += len(body["data"])
        last = body["data"][-1]
        if "_next" not in body:
            break
        start = body["_next"]
    assert count == 100_000
    assert first == {
        "_uid": "lu0",
        "braze_id": "user0",
        "email": "user0@example.com",
        "first_name": "First0",
        "last_name": "Last0",
        "segments": ["big"],
    }
    assert last["braze_id"] == "user99999"
    assert lytics_sandbox.stats["members_served"] == 100_000


def test_generate_members_does_not_materialise(http, lytics_sandbox) -> None:
    tracemalloc.start()
    try:
        lytics_sandbox.generate_members("huge", 1_000_000)
        body = http(f"{lytics_sandbox.url}/api/segment/huge/scan?limit=100", headers=AUTH).json
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body["total"] == 1_000_000
    assert len(body["data"]) == 100
    assert peak < 2_000_000  # bytes; one million stored profiles would need hundreds of MB


def test_generate_members_start_and_prefix(http, lytics_sandbox) -> None:
    lytics_sandbox.generate_members("g", 3, prefix="p", start=10)
    got, _ = scan_all(http, lytics_sandbox, "g")
    assert [m["braze_id"] for m in got] == ["p10", "p11", "p12"]
    assert lytics_sandbox.members("g")[0]["email"] == "p10@example.com"


# ---- collect ---------------------------------------------------------------------------
def collect(
    http: Any,
    lyt: LyticsSandbox,
    stream: str,
    raw: bytes,
    query: str = "",
    headers: dict | None = None,
) -> Any:
    return http(
        f"{lyt.url}/collect/json/{stream}{query}",
        "POST",
        raw=raw,
        headers={**AUTH, **(headers or {})},
    )


def test_collect_object_array_ndjson(http, lytics_sandbox) -> None:
    r1 = collect(http, lytics_sandbox, "braze_users", json.dumps({"braze_id": "b1"}).encode())
    r2 = collect(
        http,
        lytics_sandbox,
        "braze_users",
        json.dumps([{"braze_id": "b2"}, {"braze_id": "b3"}]).encode(),
    )
    r3 = collect(
        http,
        lytics_sandbox,
        "braze_users",
        b'{"braze_id": "b4"}\n\n{"braze_id": "b5"}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    for r, n in ((r1, 1), (r2, 2), (r3, 2)):
        assert r.status == 200
        assert r.json["status"] == 200
        assert r.json["message"] == "success"
        d = r.json["data"]
        assert d["message_count"] == n
        assert d["rejected_count"] == 0
        assert d["content-type"] == "application/json"
        assert d["droperrors"] is False
        assert d["dryrun"] is False
    assert [x["braze_id"] for x in lytics_sandbox.collected("braze_users")] == [
        "b1",
        "b2",
        "b3",
        "b4",
        "b5",
    ]
    assert lytics_sandbox.collected("other") == []
    assert lytics_sandbox.stats["collect_requests"] == 3
    assert lytics_sandbox.stats["collected_records"] == 5


def test_collect_dryrun_stores_nothing(http, lytics_sandbox) -> None:
    r = collect(http, lytics_sandbox, "s", b'[{"a": 1}, {"a": 2}]', "?dryrun=true")
    assert r.json["data"]["dryrun"] is True
    assert r.json["data"]["message_count"] == 2
    assert lytics_sandbox.collected("s") == []
    assert lytics_sandbox.stats["collected_records"] == 0


def test_collect_echoes_timestamp_field_and_filename(http, lytics_sandbox) -> None:
    r = collect(
        http,
        lytics_sandbox,
        "s",
        b'{"a": 1, "ts": "2024-01-01"}',
        "?timestamp_field=ts&filename=f1.json",
    )
    assert r.json["data"]["timestamp_field"] == "ts"
    assert r.json["data"]["filename"] == "f1.json"
    r = collect(http, lytics_sandbox, "s", b'{"a": 1}')
    assert r.json["data"]["timestamp_field"] == ""


def test_collect_413_over_cap(http) -> None:
    with LyticsSandbox(max_collect_bytes=1000) as lyt:
        body = json.dumps([{"x": "y" * 100} for _ in range(20)]).encode()
        r = collect(http, lyt, "s", body)
        assert r.status == 413
        assert r.json["status"] == 413
        assert lyt.collected("s") == []
        assert collect(http, lyt, "s", b'{"x": 1}').status == 200


def test_collect_default_cap_is_10_mib(http, lytics_sandbox) -> None:
    assert lytics_sandbox.max_collect_bytes == 10 * 1024 * 1024
    body = b'[{"x": "' + b"y" * (10 * 1024 * 1024) + b'"}]'
    assert collect(http, lytics_sandbox, "s", body).status == 413


def test_collect_rejects_non_objects(http, lytics_sandbox) -> None:
    r = collect(http, lytics_sandbox, "s", b'[{"a": 1}, 5, "x", null, [1], {"b": 2}]')
    assert r.json["data"]["message_count"] == 2
    assert r.json["data"]["rejected_count"] == 4
    r = collect(http, lytics_sandbox, "s", b'{"c": 3}\nnot json\n{"d": 4}')
    assert r.json["data"]["message_count"] == 2
    assert r.json["data"]["rejected_count"] == 1
    assert [sorted(x) for x in lytics_sandbox.collected("s")] == [["a"], ["b"], ["c"], ["d"]]
    assert lytics_sandbox.stats["rejected"] == 5


@pytest.mark.parametrize("raw", [b"", b"not json at all"])
def test_collect_unparsable_body_is_400(http, lytics_sandbox, raw) -> None:
    r = collect(http, lytics_sandbox, "s", raw)
    assert r.status == 400
    assert r.json["status"] == 400


# ---- rate limits and faults ----------------------------------------------------------------
def test_429_envelope_without_headers(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(3))
    lytics_sandbox.rate_limit = 2
    lytics_sandbox.rate_limit_window = 30.0
    statuses = [
        http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).status for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    r = collect(http, lytics_sandbox, "s", b'{"a": 1}')
    assert r.status == 429
    assert r.json["status"] == 429
    assert r.json["data"] is None
    assert not any(h.startswith("x-ratelimit") for h in r.headers)
    assert lytics_sandbox.collected("s") == []
    assert lytics_sandbox.stats["rate_limited"] == 2


def test_injected_5xx(http, lytics_sandbox) -> None:
    lytics_sandbox.add_audience("hv", members=members(3))
    lytics_sandbox.fail_next(1, 503, path_prefix="/collect")
    lytics_sandbox.fail_next(1, 500, path_prefix="/api/segment")
    r = collect(http, lytics_sandbox, "s", b'{"a": 1}')
    assert r.status == 503
    assert r.json["status"] == 503
    assert lytics_sandbox.collected("s") == []
    assert http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).status == 500
    assert http(f"{lytics_sandbox.url}/api/segment/hv/scan", headers=AUTH).status == 200
    assert collect(http, lytics_sandbox, "s", b'{"a": 1}').status == 200
    assert lytics_sandbox.stats["faults"] == 2
    assert lytics_sandbox.stats["scan_pages"] == 1


# ---- admin routes -------------------------------------------------------------------------
def test_admin_routes(http, lytics_sandbox) -> None:
    base = lytics_sandbox.url + "/_sandbox"
    r = http(base + "/audiences", "POST", {"slug": "vip", "name": "VIP", "members": members(2)})
    assert r.status == 200
    aid = r.json["id"]
    assert (
        http(
            base + "/audiences", "POST", {"slug": "gen", "generate": {"n": 150, "prefix": "g"}}
        ).status
        == 200
    )
    listed = {a["slug_name"]: a for a in http(base + "/audiences").json}
    assert listed["vip"]["id"] == aid
    assert listed["gen"]["total"] == 150
    got, _ = scan_all(http, lytics_sandbox, "gen", limit=100)
    assert len(got) == 150
    cur = http(f"{lytics_sandbox.url}/api/segment/gen/scan", headers=AUTH).json["_next"]
    assert http(base + "/expire_cursors", "POST").status == 200
    assert (
        http(f"{lytics_sandbox.url}/api/segment/gen/scan?start={cur}", headers=AUTH).status == 400
    )
    collect(http, lytics_sandbox, "braze_users", b'[{"a": 1}]')
    assert http(base + "/collected?stream=braze_users").json == [{"a": 1}]
    assert http(base + "/collected").json == {"braze_users": [{"a": 1}]}
    assert http(base + "/stats").json["collected_records"] == 1
    assert http(base + "/fail_next", "POST", {"n": 1, "status": 502}).status == 200
    assert collect(http, lytics_sandbox, "braze_users", b"{}").status == 502
    assert http(base + "/audiences?slug=vip", "DELETE").status == 200
    assert http(f"{lytics_sandbox.url}/api/segment/vip", headers=AUTH).status == 404
    assert http(base + "/audiences", "POST", {"name": "no slug"}).status == 400


def test_scan_by_id_query_parameter(http, lytics_sandbox) -> None:
    aid = lytics_sandbox.add_audience("hv", members=members(3))
    r = http(f"{lytics_sandbox.url}/api/segment/scan?id={aid}", headers=AUTH)
    assert r.status == 200
    assert len(r.json["data"]) == 3


def raw_exchange(port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_chunked_and_expect_continue_bodies(lytics_sandbox) -> None:
    chunked = (
        b"POST /collect/json/s HTTP/1.1\r\nHost: x\r\nAuthorization: sandbox-lytics-token\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b'9\r\n{"a": 1}\n\r\n8\r\n{"b": 2}\r\n0\r\n\r\n'
    )
    reply = raw_exchange(lytics_sandbox.port, chunked)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b'"message_count":2' in reply
    body = b'{"c": 3}'
    expect = (
        b"POST /collect/json/s HTTP/1.1\r\nHost: x\r\nAuthorization: sandbox-lytics-token\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    reply = raw_exchange(lytics_sandbox.port, expect)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert [sorted(r) for r in lytics_sandbox.collected("s")] == [["a"], ["b"], ["c"]]


def test_malformed_request_line_is_400(lytics_sandbox) -> None:
    reply = raw_exchange(lytics_sandbox.port, b"NONSENSE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert lytics_sandbox.stats["requests"] == 0


def test_collect_rejects_a_record_over_16_kib_in_a_batch(http, lytics_sandbox) -> None:
    """Lytics platform limits: 16 KB per record within a batch (sandbox/README.md)."""
    big = {"braze_id": "big", "notes": "x" * (16 * 1024)}
    at_limit = {"braze_id": "ok", "notes": ""}
    at_limit["notes"] = "y" * (16 * 1024 - len(json.dumps(at_limit, separators=(",", ":"))))
    body = json.dumps([{"braze_id": "b1"}, big, at_limit]).encode()
    r = collect(http, lytics_sandbox, "braze_users", body)
    assert r.json["data"]["message_count"] == 2
    assert r.json["data"]["rejected_count"] == 1
    assert [x["braze_id"] for x in lytics_sandbox.collected("braze_users")] == ["b1", "ok"]
    assert lytics_sandbox.stats["rejected_too_large"] == 1
    with LyticsSandbox(max_record_bytes=None) as lyt:
        r = collect(http, lyt, "braze_users", body)
        assert r.json["data"]["rejected_count"] == 0


# ---- scan faults (issue 10 section 3) -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("no_data", None), ("null_data", None), ("object_data", {})],
)
def test_malformed_scan_page_is_200_without_a_data_list(http, lytics_sandbox, kind, expected):
    lytics_sandbox.add_audience("a", members=members(3))
    lytics_sandbox.malformed_scan_pages(1, kind)
    r = http(f"{lytics_sandbox.url}/api/segment/a/scan", headers=AUTH)
    assert r.status == 200
    assert r.json.get("data") == expected
    assert ("data" in r.json) is (kind != "no_data")
    # Only the next request was faulted.
    profiles, _ = scan_all(http, lytics_sandbox, "a")
    assert len(profiles) == 3
    assert lytics_sandbox.stats["malformed_pages"] == 1


@pytest.mark.parametrize("report_total", [True, False])
def test_truncated_scan_ends_early_without_a_cursor(http, lytics_sandbox, report_total):
    lytics_sandbox.add_audience("t", members=members(25))
    lytics_sandbox.truncate_scan("t", 12, report_total=report_total)
    profiles, replies = scan_all(http, lytics_sandbox, "t", limit=5)
    assert [p["braze_id"] for p in profiles] == [f"m{i}" for i in range(12)]
    assert {r.json["total"] for r in replies} == {25 if report_total else 12}
    lytics_sandbox.truncate_scan("t", None)
    assert len(scan_all(http, lytics_sandbox, "t", limit=5)[0]) == 25


def test_membership_edited_during_a_scan_keeps_cursors_and_shifts_positions(http, lytics_sandbox):
    lytics_sandbox.add_audience("live", members=members(20))
    # After the first page: lu0 leaves (positions shift left: m10 is never served) ...
    lytics_sandbox.edit_members_during_scan("live", 1, remove=["lu0"])
    profiles, replies = scan_all(http, lytics_sandbox, "live", limit=10)
    ids = [p["braze_id"] for p in profiles]
    assert "m10" not in ids
    assert len(ids) == 19
    assert [r.json["total"] for r in replies] == [20, 19]
    # ... and a member joining at the front makes a running scan serve one twice.
    lytics_sandbox.edit_members_during_scan("live", 1, add=[{"_uid": "new", "braze_id": "n"}])
    profiles, replies = scan_all(http, lytics_sandbox, "live", limit=10)
    ids = [p["braze_id"] for p in profiles]
    assert len(ids) == 20
    assert len(set(ids)) == 19
    assert [r.json["total"] for r in replies] == [19, 20]


def test_scan_fault_admin_routes(http, lytics_sandbox):
    lytics_sandbox.add_audience("x", members=members(4))
    base = f"{lytics_sandbox.url}/_sandbox"
    assert http(f"{base}/truncate_scan", "POST", {"slug": "x", "serve": 2}).status == 200
    assert len(scan_all(http, lytics_sandbox, "x")[0]) == 2
    assert http(f"{base}/truncate_scan", "POST", {"slug": "x", "serve": None}).status == 200
    edit = {"slug": "x", "remove": ["lu1"], "add": [{"_uid": "z", "braze_id": "z"}], "at": 4}
    assert http(f"{base}/edit_members", "POST", edit).status == 200
    assert [p["braze_id"] for p in lytics_sandbox.members("x")] == ["m0", "m2", "m3", "z"]
    assert http(f"{base}/malformed_scan", "POST", {"n": 1}).status == 200
    r = http(f"{lytics_sandbox.url}/api/segment/x/scan", headers=AUTH)
    assert "data" not in r.json


# ---- scan latency (benchmark-only knob) ----------------------------------------------
def test_scan_page_delay_holds_scan_answers_back_and_nothing_else(http) -> None:
    with LyticsSandbox(scan_page_delay=0.3) as lyt:
        lyt.add_audience("x", members=members(3))
        t0 = time.monotonic()
        assert http(f"{lyt.url}/api/segment/x/scan", headers=AUTH).status == 200
        assert time.monotonic() - t0 >= 0.3
        t0 = time.monotonic()
        assert http(f"{lyt.url}/api/segment/x", headers=AUTH).status == 200
        assert time.monotonic() - t0 < 0.3
        # the admin route changes it at run time
        r = http(f"{lyt.url}/_sandbox/scan_page_delay", "POST", {"seconds": 0})
        assert r.json == {"ok": True, "seconds": 0.0}
        assert lyt.scan_page_delay == 0
        assert http(f"{lyt.url}/_sandbox/scan_page_delay", "POST", {"seconds": -1}).status == 400


def test_scan_page_delay_does_not_serialise_concurrent_scans(http) -> None:
    """A second scan is answered while the first one's answer is still held back."""
    delay = 2.0
    with LyticsSandbox(scan_page_delay=delay) as lyt:
        lyt.add_audience("a", members=members(3))
        lyt.add_audience("b", members=members(3))
        results: dict[str, int] = {}

        def scan(slug: str) -> None:
            results[slug] = http(f"{lyt.url}/api/segment/{slug}/scan", headers=AUTH).status

        first = threading.Thread(target=scan, args=("a",))
        first.start()
        while lyt.stats_snapshot()["scan_pages"] < 1:  # a is being held back from here on
            time.sleep(0.01)
        a_served = time.monotonic()
        second = threading.Thread(target=scan, args=("b",))
        second.start()
        while lyt.stats_snapshot()["scan_pages"] < 2:
            time.sleep(0.01)
        # Served while a's answer is still held: with the delay taken under the server lock,
        # b could not be served before a's delay had run out.
        assert time.monotonic() - a_served < delay
        assert first.is_alive()
        first.join()
        second.join()
        assert results == {"a": 200, "b": 200}
