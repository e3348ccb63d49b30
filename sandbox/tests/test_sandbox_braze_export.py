"""BrazeSandbox ``POST /users/export/segment`` against Braze's documented contract."""

from __future__ import annotations

import gzip
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sandbox import BrazeSandbox

AUTH = {"Authorization": "Bearer sandbox-braze-key"}
CAMPAIGN = {
    "name": "Welcome",
    "api_campaign_id": "c-1",
    "last_received": "2026-11-20T10:00:00.000Z",
    "engaged": {"opened_email": True},
    "converted": False,
}


def export(http: Any, b: BrazeSandbox, body: Any, headers: dict[str, str] | None = None) -> Any:
    return http(b.url + "/users/export/segment", "POST", body, AUTH if headers is None else headers)


@pytest.fixture
def braze(braze_sandbox: BrazeSandbox) -> BrazeSandbox:
    for i in range(7):
        braze_sandbox.add_user(
            f"u{i}",
            email=f"u{i}@x.io",
            home_city="Paris",
            tier="gold",
            campaigns_received=[CAMPAIGN],
        )
    braze_sandbox.add_segment("all")
    braze_sandbox.add_segment("two", ["u1", "u2", "nobody"])
    braze_sandbox.segment_exports.users_per_file = 3
    return braze_sandbox


def lines_of_zip(data: bytes) -> tuple[list[str], list[dict]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        users = [json.loads(line) for n in names for line in zf.read(n).splitlines() if line]
    return names, users


def test_url_export_ready_after_delay(http, braze: BrazeSandbox) -> None:
    braze.segment_exports.delay = 0.3
    fields = ["email", "home_city", "custom_attributes", "campaigns_received"]
    r = export(http, braze, {"segment_id": "all", "fields_to_export": fields})
    assert r.status == 201
    body = r.json
    assert body["message"] == "success"
    prefix = body["object_prefix"]
    assert prefix.count("-") == 5  # RANDOM_UUID-TIMESTAMP_WHEN_EXPORT_STARTED
    # The URL is presigned: no key needed, 404 until the export is ready.
    assert http(body["url"]).status == 404
    time.sleep(0.35)
    reply = http(body["url"])
    assert reply.status == 200
    names, users = lines_of_zip(reply.body)
    assert len(names) == 3  # 7 users, 3 per file
    assert all(n.startswith(prefix + "/") for n in names)
    assert sorted(u["external_id"] for u in users) == [f"u{i}" for i in range(7)]
    user = users[0]
    assert user["braze_id"]
    assert user["home_city"] == "Paris"
    assert user["custom_attributes"] == {"tier": "gold"}
    assert user["campaigns_received"] == [CAMPAIGN]
    # A tampered signature is refused.
    assert http(body["url"].replace("X-Amz-Signature=", "X-Amz-Signature=x")).status == 403


def test_fields_to_export_limits_output(http, braze: BrazeSandbox) -> None:
    r = export(http, braze, {"segment_id": "two", "fields_to_export": ["email"]})
    _, users = lines_of_zip(http(r.json["url"]).body)
    assert sorted(u["external_id"] for u in users) == ["u1", "u2"]
    assert all(set(u) == {"external_id", "braze_id", "email"} for u in users)
    r = export(
        http,
        braze,
        {
            "segment_id": "two",
            "fields_to_export": ["email"],
            "custom_attributes_to_export": ["tier"],
        },
    )
    _, users = lines_of_zip(http(r.json["url"]).body)
    assert all(u["custom_attributes"] == {"tier": "gold"} for u in users)


def test_one_export_per_segment_at_a_time(http, braze: BrazeSandbox) -> None:
    braze.segment_exports.delay = 30
    body = {"segment_id": "all", "fields_to_export": ["email"]}
    assert export(http, braze, body).status == 201
    second = export(http, braze, body)
    assert second.status == 429
    assert "in progress" in second.json["message"]
    # Another segment is fine.
    assert export(http, braze, {"segment_id": "two", "fields_to_export": ["email"]}).status == 201


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"fields_to_export": ["email"]}, "segment_id"),
        ({"segment_id": "all"}, "fields_to_export"),
        ({"segment_id": "all", "fields_to_export": ["nope"]}, "Invalid fields_to_export"),
        ({"segment_id": "missing", "fields_to_export": ["email"]}, "segment_id"),
        (
            {"segment_id": "all", "fields_to_export": ["email"], "output_format": "rar"},
            "output_format",
        ),
    ],
)
def test_bad_requests(http, braze: BrazeSandbox, body: dict, fragment: str) -> None:
    r = export(http, braze, body)
    assert r.status == 400
    assert fragment in r.json["message"]


def test_auth_required(http, braze: BrazeSandbox) -> None:
    r = export(http, braze, {"segment_id": "all", "fields_to_export": ["email"]}, {})
    assert r.status == 401


def test_url_expires(http, braze: BrazeSandbox) -> None:
    braze.segment_exports.url_ttl = 0.1
    r = export(http, braze, {"segment_id": "all", "fields_to_export": ["email"]})
    time.sleep(0.2)
    assert http(r.json["url"]).status == 403


@pytest.mark.parametrize("output_format", ["zip", "gzip"])
def test_bucket_export_layout(
    http, braze: BrazeSandbox, tmp_path: Path, output_format: str
) -> None:
    braze.segment_exports.bucket = str(tmp_path)
    braze.segment_exports.delay = 0.2
    r = export(
        http,
        braze,
        {"segment_id": "all", "fields_to_export": ["email"], "output_format": output_format},
    )
    assert r.status == 201
    assert "url" not in r.json  # with cloud storage there is no download URL
    prefix = r.json["object_prefix"]
    assert not list(tmp_path.rglob("*.zip"))
    assert not list(tmp_path.rglob("*.gz"))
    deadline = time.time() + 5
    suffix = ".zip" if output_format == "zip" else ".gz"
    while time.time() < deadline and len(list(tmp_path.rglob("*" + suffix))) < 3:
        time.sleep(0.05)
    files = sorted(tmp_path.rglob("*" + suffix))
    assert len(files) == 3
    for path in files:
        parts = path.relative_to(tmp_path).parts
        assert parts[0] == "segment-export"
        assert parts[1] == "all"
        assert len(parts[2]) == 10
        assert parts[3] == prefix
    users = []
    for path in files:
        if suffix == ".zip":
            users += lines_of_zip(path.read_bytes())[1]
        else:
            users += [json.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
    assert sorted(u["external_id"] for u in users) == [f"u{i}" for i in range(7)]


def test_admin_routes_define_segments_and_settings(http, braze_sandbox: BrazeSandbox) -> None:
    braze_sandbox.add_user("a1", email="a@x.io")
    assert (
        http(braze_sandbox.url + "/_sandbox/segments", "POST", {"segment_id": "s1"}).status == 200
    )
    r = http(
        braze_sandbox.url + "/_sandbox/export_settings", "POST", {"delay": 0, "users_per_file": 2}
    )
    assert r.json["users_per_file"] == 2
    r = export(http, braze_sandbox, {"segment_id": "s1", "fields_to_export": ["email"]})
    assert r.status == 201
    assert braze_sandbox.stats["exports"] == 1
