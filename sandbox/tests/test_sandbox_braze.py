"""BrazeSandbox against the documented /users/track contract (SANDBOX_API.md, issue 2)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sandbox import BrazeSandbox

AUTH = {"Authorization": "Bearer sandbox-braze-key"}


def track(http: Any, b: BrazeSandbox, body: Any, headers: dict[str, str] | None = None) -> Any:
    return http(b.url + "/users/track", "POST", body, AUTH if headers is None else headers)


def seg(ext: str, add: list[str] | None = None, remove: list[str] | None = None) -> dict:
    op: dict[str, list[str]] = {}
    if add is not None:
        op["add"] = add
    if remove is not None:
        op["remove"] = remove
    return {"external_id": ext, "lytics_segments": op}


# ---- auth ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-123"},
        {"Authorization": "sandbox-braze-key"},  # raw key without Bearer
    ],
)
def test_auth_required_and_key_not_echoed(http, braze_sandbox, headers) -> None:
    r = track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}, headers)
    assert r.status == 401
    assert r.json["message"].startswith("Invalid API key")
    assert b"wrong-key-123" not in r.body
    assert b"sandbox-braze-key" not in r.body
    assert braze_sandbox.users() == {}
    assert braze_sandbox.requests[-1].status == 401


def test_custom_api_key(http) -> None:
    call = http
    with BrazeSandbox(api_key="k-1") as b:
        assert (
            call(b.url + "/users/track", "POST", {"attributes": [seg("u", ["a"])]}, AUTH).status
            == 401
        )
        ok = call(
            b.url + "/users/track",
            "POST",
            {"attributes": [seg("u", ["a"])]},
            {"Authorization": "Bearer k-1"},
        )
        assert ok.status == 201
        assert b.user("u") == {"external_id": "u", "lytics_segments": ["a"]}


# ---- request validation ---------------------------------------------------------------
@pytest.mark.parametrize("body", [{}, {"attributes": []}, {"other": [1]}, [1, 2]])
def test_no_valid_data_is_400(http, braze_sandbox, body) -> None:
    r = track(http, braze_sandbox, body)
    assert r.status == 400
    assert "Valid data must be provided" in r.json["message"]


def test_non_json_body_is_400(http, braze_sandbox) -> None:
    r = http(braze_sandbox.url + "/users/track", "POST", raw=b"not json{", headers=AUTH)
    assert r.status == 400
    assert "Valid data must be provided" in r.json["message"]


@pytest.mark.parametrize("array", ["attributes", "events"])
def test_more_than_75_objects_is_400_and_nothing_applied(http, braze_sandbox, array) -> None:
    objs: list[dict] = [seg(f"u{i}", ["a"]) for i in range(76)]
    body: dict[str, Any] = {"attributes": [seg("first", ["a"])]}
    if array == "events":
        body["events"] = [
            {"external_id": f"u{i}", "name": "e", "time": "2024-01-01"} for i in range(76)
        ]
    else:
        body["attributes"] = objs
    r = track(http, braze_sandbox, body)
    assert r.status == 400
    assert r.json["message"] == "Max Input Length Exceeded"
    assert braze_sandbox.users() == {}
    assert braze_sandbox.stats["data_points"] == 0


def test_exactly_75_objects_accepted(http, braze_sandbox) -> None:
    r = track(http, braze_sandbox, {"attributes": [seg(f"u{i}", ["a"]) for i in range(75)]})
    assert r.status == 201
    assert r.json["attributes_processed"] == 75
    assert len(braze_sandbox.users()) == 75


def test_identifier_rules(http, braze_sandbox) -> None:
    body = {
        "attributes": [
            {"lytics_segments": {"add": ["a"]}},  # 0: no identifier
            {"external_id": "u1", "braze_id": "b1", "x": 1},  # 1: two primary identifiers
            {"external_id": "u2", "x": 1},  # 2: ok
            {"email": "e@x.io", "phone": "+15550001", "x": 2},  # 3: email wins over phone
            {"phone": "+15550002", "x": 3},  # 4: phone alone
            {"braze_id": "b9", "x": 4},  # 5: braze_id
            {"external_id": "", "x": 5},  # 6: empty id
        ]
    }
    r = track(http, braze_sandbox, body)
    assert r.status == 201
    assert [(e["input_array"], e["index"]) for e in r.json["errors"]] == [
        ("attributes", 0),
        ("attributes", 1),
        ("attributes", 6),
    ]
    assert "external_id" in r.json["errors"][0]["type"]
    users = braze_sandbox.users()
    assert set(users) == {"u2", "email:e@x.io", "phone:+15550002", "braze_id:b9"}
    assert users["email:e@x.io"] == {"email": "e@x.io", "phone": "+15550001", "x": 2}
    assert "u1" not in users


def test_email_identifier_updates_existing_profile_with_that_email(http, braze_sandbox) -> None:
    braze_sandbox.add_user("u5", email="five@x.io")
    r = track(http, braze_sandbox, {"attributes": [{"email": "five@x.io", "city": "Paris"}]})
    assert r.status == 201
    assert braze_sandbox.user("u5") == {"external_id": "u5", "email": "five@x.io", "city": "Paris"}
    assert len(braze_sandbox.users()) == 1


# ---- array semantics ------------------------------------------------------------------
def test_add_keeps_unique_and_moves_existing_to_end(http, braze_sandbox) -> None:
    track(http, braze_sandbox, {"attributes": [seg("u1", ["a", "b", "c"])]})
    track(http, braze_sandbox, {"attributes": [seg("u1", ["a", "d"])]})
    assert braze_sandbox.user("u1")["lytics_segments"] == ["b", "c", "a", "d"]


def test_add_duplicates_within_one_request_collapse(http, braze_sandbox) -> None:
    track(http, braze_sandbox, {"attributes": [seg("u1", ["hotdog", "hotdog", "hotdog", "pizza"])]})
    assert braze_sandbox.user("u1")["lytics_segments"] == ["hotdog", "pizza"]


def test_array_cap_drops_oldest(http) -> None:
    call = http
    with BrazeSandbox(max_array_length=3) as b:
        call(b.url + "/users/track", "POST", {"attributes": [seg("u1", ["a", "b", "c"])]}, AUTH)
        call(b.url + "/users/track", "POST", {"attributes": [seg("u1", ["d"])]}, AUTH)
        assert b.user("u1")["lytics_segments"] == ["b", "c", "d"]
        call(
            b.url + "/users/track",
            "POST",
            {"attributes": [{"external_id": "u2", "l": ["1", "2", "3", "4"]}]},
            AUTH,
        )
        assert b.user("u2")["l"] == ["2", "3", "4"]


def test_default_array_cap_is_500(http, braze_sandbox) -> None:
    values = [f"v{i}" for i in range(70)]
    for i in range(8):  # 560 distinct values over 8 requests
        track(http, braze_sandbox, {"attributes": [seg("u1", [f"{v}-{i}" for v in values])]})
    arr = braze_sandbox.user("u1")["lytics_segments"]
    assert len(arr) == 500
    assert arr[-1] == "v69-7"
    assert "v0-0" not in arr


def test_remove_and_add_remove_in_one_object(http, braze_sandbox) -> None:
    braze_sandbox.add_user("u1", lytics_segments=["a", "b", "c"])
    r = track(http, braze_sandbox, {"attributes": [seg("u1", add=["d"], remove=["a", "zz"])]})
    assert r.status == 201
    assert braze_sandbox.user("u1")["lytics_segments"] == ["b", "c", "d"]
    track(http, braze_sandbox, {"attributes": [seg("u1", remove=["b", "c", "d"])]})
    assert braze_sandbox.user("u1")["lytics_segments"] == []


def test_plain_list_sets_array(http, braze_sandbox) -> None:
    braze_sandbox.add_user("u1", lytics_segments=["a", "b"])
    track(http, braze_sandbox, {"attributes": [{"external_id": "u1", "lytics_segments": ["x"]}]})
    assert braze_sandbox.user("u1")["lytics_segments"] == ["x"]


def test_null_removes_attribute_and_other_values_set(http, braze_sandbox) -> None:
    braze_sandbox.add_user("u1", lytics_segments=["a"], city="Paris")
    body = {"attributes": [{"external_id": "u1", "lytics_segments": None, "tier": 3, "vip": True}]}
    track(http, braze_sandbox, body)
    assert braze_sandbox.user("u1") == {
        "external_id": "u1",
        "city": "Paris",
        "tier": 3,
        "vip": True,
    }


def test_string_over_255_is_object_error_and_object_untouched(http, braze_sandbox) -> None:
    braze_sandbox.add_user("u1", city="Paris")
    body = {
        "attributes": [
            {"external_id": "u1", "city": "Lyon", "bio": "x" * 256},
            {"external_id": "u2", "bio": "x" * 255},
        ]
    }
    r = track(http, braze_sandbox, body)
    assert r.status == 201
    assert r.json["errors"] == [
        {"type": r.json["errors"][0]["type"], "input_array": "attributes", "index": 0}
    ]
    assert "255" in r.json["errors"][0]["type"]
    assert braze_sandbox.user("u1") == {"external_id": "u1", "city": "Paris"}
    assert len(braze_sandbox.user("u2")["bio"]) == 255


# ---- creation / update-only ------------------------------------------------------------
def test_unknown_external_id_creates_user(http, braze_sandbox) -> None:
    r = track(http, braze_sandbox, {"attributes": [seg("new", ["a"])]})
    assert r.status == 201
    assert braze_sandbox.user("new") == {"external_id": "new", "lytics_segments": ["a"]}
    assert braze_sandbox.stats["users_created"] == 1


def test_update_existing_only_skips_unknown_silently(http, braze_sandbox) -> None:
    braze_sandbox.add_user("known")
    body = {
        "attributes": [
            {**seg("known", ["a"]), "_update_existing_only": True},
            {**seg("ghost", ["a"]), "_update_existing_only": True},
        ]
    }
    r = track(http, braze_sandbox, body)
    assert r.status == 201
    assert "errors" not in r.json
    assert braze_sandbox.user("known") == {"external_id": "known", "lytics_segments": ["a"]}
    assert braze_sandbox.user("ghost") is None
    assert braze_sandbox.stats["users_created"] == 0
    assert braze_sandbox.stats["data_points"] == 1


def test_user_alias_defaults_to_update_only(http, braze_sandbox) -> None:
    alias = {"alias_name": "n1", "alias_label": "crm"}
    track(http, braze_sandbox, {"attributes": [{"user_alias": alias, "x": 1}]})
    assert braze_sandbox.users() == {}
    track(
        http,
        braze_sandbox,
        {"attributes": [{"user_alias": alias, "x": 1, "_update_existing_only": False}]},
    )
    assert braze_sandbox.users()["alias:crm:n1"]["x"] == 1


# ---- partial errors -------------------------------------------------------------------
def test_rejected_ids_reported_and_rest_applied(http, braze_sandbox) -> None:
    reason = "provided external_id is blacklisted and disallowed"
    braze_sandbox.reject({"u7": reason})
    body = {"attributes": [seg("u6", ["a"]), seg("u7", ["a"]), seg("u8", ["a"])]}
    r = track(http, braze_sandbox, body)
    assert r.status == 201
    assert r.json["message"] == "success"
    assert r.json["attributes_processed"] == 2
    assert r.json["errors"] == [{"type": reason, "input_array": "attributes", "index": 1}]
    assert set(braze_sandbox.users()) == {"u6", "u8"}
    assert braze_sandbox.stats["errors"] == 1
    braze_sandbox.unreject("u7")
    assert track(http, braze_sandbox, {"attributes": [seg("u7", ["a"])]}).json.get("errors") is None
    assert braze_sandbox.user("u7") is not None


def test_events_and_purchases_processed(http, braze_sandbox) -> None:
    body = {
        "events": [
            {"external_id": "u1", "name": "enter", "time": "2024-01-01T00:00:00Z"},
            {"external_id": "u1"},
        ],
        "purchases": [
            {
                "external_id": "u1",
                "product_id": "p",
                "currency": "USD",
                "price": 1.5,
                "time": "2024-01-01",
            }
        ],
    }
    r = track(http, braze_sandbox, body)
    assert r.status == 201
    assert r.json["events_processed"] == 1
    assert r.json["purchases_processed"] == 1
    assert r.json["errors"][0]["input_array"] == "events"
    assert r.json["errors"][0]["index"] == 1
    assert [e["name"] for e in braze_sandbox.events()] == ["enter"]
    assert braze_sandbox.purchases()[0]["product_id"] == "p"


# ---- rate limits and faults -------------------------------------------------------------
def test_rate_limit_headers_on_every_response(http, braze_sandbox) -> None:
    for r in (
        track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}),
        track(http, braze_sandbox, {}),
        track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}, {}),
        http(braze_sandbox.url + "/nope", headers=AUTH),
    ):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
        assert int(r.headers["x-ratelimit-reset"]) >= int(time.time())


def test_429_past_limit_with_headers_and_reset(http, braze_sandbox) -> None:
    braze_sandbox.rate_limit = 3
    braze_sandbox.rate_limit_window = 30.0
    statuses = []
    remaining = []
    for i in range(5):
        r = track(http, braze_sandbox, {"attributes": [seg(f"u{i}", ["a"])]})
        statuses.append(r.status)
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
        assert r.headers["x-ratelimit-limit"] == "3"
    assert statuses == [201, 201, 201, 429, 429]
    assert remaining == [2, 1, 0, 0, 0]
    assert r.json == {"message": "Rate limit exceeded"}
    assert int(r.headers["x-ratelimit-reset"]) > time.time()
    assert set(braze_sandbox.users()) == {"u0", "u1", "u2"}
    assert braze_sandbox.stats["rate_limited"] == 2


def test_rate_limit_window_resets(http, braze_sandbox) -> None:
    braze_sandbox.rate_limit = 1
    braze_sandbox.rate_limit_window = 0.2
    first = track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]})
    if first.status == 201:  # a window boundary may fall between the two calls
        assert track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}).status in (201, 429)
    time.sleep(0.45)
    assert track(http, braze_sandbox, {"attributes": [seg("u2", ["a"])]}).status == 201


@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_5xx_applies_nothing(http, braze_sandbox, status) -> None:
    braze_sandbox.fail_next(2, status=status)
    for _ in range(2):
        r = track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]})
        assert r.status == status
        assert "message" in r.json
        assert "x-ratelimit-limit" in r.headers
    assert braze_sandbox.users() == {}
    assert braze_sandbox.stats["faults"] == 2
    assert braze_sandbox.stats["data_points"] == 0
    assert track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}).status == 201


def test_fail_next_path_prefix(http, braze_sandbox) -> None:
    braze_sandbox.fail_next(1, 503, path_prefix="/users/export")
    assert track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]}).status == 201
    assert braze_sandbox.stats["faults"] == 0


# ---- counters and read-back -------------------------------------------------------------
def test_counters(http, braze_sandbox) -> None:
    track(
        http,
        braze_sandbox,
        {
            "attributes": [
                seg("u1", ["a", "b"], ["c"]),
                {"external_id": "u2", "city": "X", "tier": 2},
            ]
        },
    )
    track(
        http,
        braze_sandbox,
        {"attributes": [{"external_id": "u2", "email_subscribe": "opted_in", "lst": ["a", "b"]}]},
    )
    track(http, braze_sandbox, {}, {})  # 401
    s = braze_sandbox.stats
    assert s["requests"] == 3
    assert s["accepted_requests"] == 2
    assert s["objects"] == 3
    # u1: add a,b + remove c = 3; u2: city + tier = 2; then list set = 1, subscription = 0
    assert s["data_points"] == 6
    assert s["users_created"] == 2
    assert s["errors"] == 0


def test_recorded_requests(http, braze_sandbox) -> None:
    body = {"attributes": [seg("u1", ["a"])]}
    http(braze_sandbox.url + "/users/track?x=1", "POST", body, {**AUTH, "X-Braze-Bulk": "true"})
    (req,) = braze_sandbox.requests
    assert req.method == "POST"
    assert req.path == "/users/track"
    assert req.query == {"x": "1"}
    assert req.headers["x-braze-bulk"] == "true"
    assert req.json == body
    assert json.loads(req.body) == body
    assert req.status == 201
    braze_sandbox.clear_requests()
    assert braze_sandbox.requests == []


def test_users_read_back_is_a_copy(http, braze_sandbox) -> None:
    track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]})
    users = braze_sandbox.users()
    users["u1"]["lytics_segments"].append("tampered")
    assert braze_sandbox.user("u1") == {"external_id": "u1", "lytics_segments": ["a"]}
    assert braze_sandbox.user("missing") is None


# ---- admin routes ----------------------------------------------------------------------
def test_admin_routes(http, braze_sandbox) -> None:
    base = braze_sandbox.url + "/_sandbox"
    assert (
        http(base + "/users", "POST", {"users": {"u1": {"lytics_segments": ["a"]}}}).status == 200
    )
    assert http(base + "/reject", "POST", {"ids": {"u2": "nope"}}).status == 200
    assert http(base + "/fail_next", "POST", {"n": 1, "status": 503}).status == 200
    assert track(http, braze_sandbox, {"attributes": [seg("u2", ["a"])]}).status == 503
    r = track(http, braze_sandbox, {"attributes": [seg("u2", ["a"]), seg("u1", ["b"])]})
    assert r.json["errors"] == [{"type": "nope", "input_array": "attributes", "index": 0}]
    assert http(base + "/users").json == {
        "u1": {"external_id": "u1", "lytics_segments": ["a", "b"]}
    }
    stats = http(base + "/stats").json
    assert stats["faults"] == 1
    assert stats["requests"] == 2
    reqs = http(base + "/requests").json
    assert [x["status"] for x in reqs] == [503, 201]
    assert reqs[0]["headers"]["authorization"] == "<redacted>"
    assert http(base + "/rate_limit", "POST", {"limit": 0, "window": 60}).status == 200
    assert track(http, braze_sandbox, {"attributes": [seg("u3", ["a"])]}).status == 429
    assert http(base + "/rate_limit", "POST", {"limit": None}).status == 200
    assert track(http, braze_sandbox, {"attributes": [seg("u3", ["a"])]}).status == 201
    assert http(base + "/nope").status == 404


def test_concurrent_clients_lose_no_update(http, braze_sandbox) -> None:
    import threading

    def worker(t: int) -> None:
        for i in range(10):
            r = track(
                http, braze_sandbox, {"attributes": [seg(f"u{j}", [f"s{t}-{i}"]) for j in range(5)]}
            )
            assert r.status == 201

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for j in range(5):
        assert len(braze_sandbox.user(f"u{j}")["lytics_segments"]) == 40
    assert braze_sandbox.stats["objects"] == 200
    assert braze_sandbox.stats["requests"] == 40


def test_keep_alive_connection_reused(braze_sandbox) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", braze_sandbox.port, timeout=5)
    for i in range(3):
        conn.request(
            "POST", "/users/track", json.dumps({"attributes": [seg(f"u{i}", ["a"])]}), AUTH
        )
        resp = conn.getresponse()
        assert resp.status == 201
        assert resp.getheader("Connection") != "close"
        resp.read()
    conn.close()
    assert len(braze_sandbox.users()) == 3


def test_stop_closes_idle_keep_alive_connections() -> None:
    import http.client

    b = BrazeSandbox().start()
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5)
    conn.request("POST", "/users/track", json.dumps({"attributes": [seg("u", ["a"])]}), AUTH)
    conn.getresponse().read()
    started = time.monotonic()
    b.stop()
    assert time.monotonic() - started < 3

    def again() -> None:
        conn.request("POST", "/users/track", json.dumps({"attributes": [seg("u", ["a"])]}), AUTH)
        conn.getresponse().read()

    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        again()


def test_recording_can_be_capped_or_disabled(http, braze_sandbox) -> None:
    braze_sandbox.max_recorded_requests = 2
    for i in range(4):
        track(http, braze_sandbox, {"attributes": [seg(f"u{i}", ["a"])]})
    assert [r.json["attributes"][0]["external_id"] for r in braze_sandbox.requests] == ["u2", "u3"]
    braze_sandbox.record_requests = False
    track(http, braze_sandbox, {"attributes": [seg("u9", ["a"])]})
    assert len(braze_sandbox.requests) == 2
    assert braze_sandbox.stats["requests"] == 5


# ---- Braze's other answers (issue 10) ---------------------------------------------------
def test_no_valid_object_is_400_with_per_object_errors(http, braze_sandbox) -> None:
    braze_sandbox.reject({"u7": "provided external_id is blacklisted and disallowed"})
    body = {"attributes": [seg("u7", ["a"]), {"lytics_segments": {"add": ["a"]}}]}
    r = track(http, braze_sandbox, body)
    assert r.status == 400
    assert r.json["message"] == (
        "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
    )
    assert [(e["input_array"], e["index"]) for e in r.json["errors"]] == [
        ("attributes", 0),
        ("attributes", 1),
    ]
    assert r.json["errors"][0]["type"] == "provided external_id is blacklisted and disallowed"
    assert braze_sandbox.users() == {}
    assert braze_sandbox.stats["accepted_requests"] == 0
    # One valid object is enough for a 201 with the others named in errors.
    r = track(http, braze_sandbox, {"attributes": [seg("u7", ["a"]), seg("u8", ["a"])]})
    assert (r.status, [e["index"] for e in r.json["errors"]]) == (201, [0])


def test_queue_next_answers_202_queued_and_applies(http, braze_sandbox) -> None:
    braze_sandbox.queue_next(1)
    r = track(http, braze_sandbox, {"attributes": [seg("u1", ["a"])]})
    assert (r.status, r.json) == (202, {"message": "queued"})
    assert braze_sandbox.user("u1") == {"external_id": "u1", "lytics_segments": ["a"]}
    assert braze_sandbox.stats["queued"] == 1
    assert track(http, braze_sandbox, {"attributes": [seg("u2", ["a"])]}).status == 201
    assert http(braze_sandbox.url + "/_sandbox/queue_next", "POST", {"n": 2}).status == 200
    assert track(http, braze_sandbox, {"attributes": [seg("u3", ["a"])]}).status == 202


@pytest.mark.parametrize("status", [400, 413])
def test_lower_object_limit_refuses_whole_request(http, status) -> None:
    with BrazeSandbox(max_objects=50, max_objects_status=status) as b:
        over = track(http, b, {"attributes": [seg(f"u{i}", ["a"]) for i in range(51)]})
        assert (over.status, over.json) == (status, {"message": "Max Input Length Exceeded"})
        assert b.users() == {}
        assert (
            track(http, b, {"attributes": [seg(f"u{i}", ["a"]) for i in range(50)]}).status == 201
        )
        assert b.user_count() == 50


def test_refused_requests_have_no_per_object_detail(http, braze_sandbox) -> None:
    braze_sandbox.refuse_requests_with({"u7": "Bad Request"})
    r = track(http, braze_sandbox, {"attributes": [seg("u6", ["a"]), seg("u7", ["a"])]})
    assert (r.status, r.json) == (400, {"message": "Bad Request"})
    assert braze_sandbox.users() == {}
    assert track(http, braze_sandbox, {"attributes": [seg("u6", ["a"])]}).status == 201
    base = braze_sandbox.url + "/_sandbox"
    assert (
        http(base + "/refuse_requests", "POST", {"ids": {"u6": "too big"}, "status": 413}).status
        == 200
    )
    assert track(http, braze_sandbox, {"attributes": [seg("u6", ["b"])]}).status == 413
    braze_sandbox.refuse_requests_with({})
    assert track(http, braze_sandbox, {"attributes": [seg("u7", ["a"])]}).status == 201


def test_limits_admin_route(http, braze_sandbox) -> None:
    base = braze_sandbox.url + "/_sandbox"
    r = http(base + "/limits", "POST", {"max_objects": 2, "max_array_length": 2})
    assert r.json["max_objects"] == 2
    assert (
        track(http, braze_sandbox, {"attributes": [seg(f"u{i}") for i in range(3)]}).status == 400
    )
    track(http, braze_sandbox, {"attributes": [seg("u1", ["a", "b", "c"])]})
    assert braze_sandbox.user("u1")["lytics_segments"] == ["b", "c"]  # oldest dropped
