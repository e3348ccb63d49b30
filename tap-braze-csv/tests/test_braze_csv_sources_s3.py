"""Object storage paths against a real S3-compatible server (moto's standalone server).

Covers Braze's own S3 key layout, state keyed by etag (strings, no floats), the credential
chain and AWS_ENDPOINT_URL, files vanishing or changing between runs, PGP and gzip in a bucket.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pgp_keys
import pytest
from braze_csv_testkit import run_tap
from s3_server import S3TestServer
from tap_braze_csv.cloud import braze_segment_id, object_source
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.routing import RoutingSource, make_source
from tap_braze_csv.sample import generate_export, read_export_rows

SEG_A = "5f0c9a1e2b3d4c5e6f708192"
SEG_B = "61aa00bb11cc22dd33ee44ff"


def floats_in(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


@pytest.fixture
def bucket(s3: S3TestServer, tmp_path: Path) -> dict[str, Any]:
    """A bucket holding two Braze exports under Braze's key layout and one unrelated object."""
    name = s3.new_bucket()
    a = generate_export(tmp_path / "a.zip", 120, segment="Active", seed=1)
    b = generate_export(tmp_path / "b.zip", 80, segment="VIP", seed=2)
    keys = {
        f"segment-export/{SEG_A}/2026-11-28/users-8f3a2c.zip": a,
        f"segment-export/{SEG_B}/2026-11-29/users-91bd07.zip": b,
    }
    for key, path in keys.items():
        s3.put(name, key, path)
    s3.put(name, "other/readme.txt", b"not an export")
    return {"name": name, "keys": keys, "rows": {k: read_export_rows(p) for k, p in keys.items()}}


def config(s3: S3TestServer, bucket: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "paths": [f"s3://{bucket}/segment-export/*/*/*.zip"],
        "s3": s3.config(),
    }
    cfg.update(extra)
    return cfg


def test_braze_s3_layout_read_with_segment_ids_then_nothing_new(s3, bucket):
    run = run_tap(config(s3, bucket["name"]))
    records = run.records
    expected = bucket["rows"]
    assert len(records) == sum(len(r) for r in expected.values()) == 200
    for key, rows in expected.items():
        uri = f"s3://{bucket['name']}/{key}"
        got = [r for r in records if r["_sdc_source_file"].startswith(uri + "!")]
        assert [g["braze_id"] for g in got] == [row["Appboy ID"] for row in rows]
        assert {g["_braze_segment_id"] for g in got} == {key.split("/")[1]}
        assert {g["segment_name"] for g in got} == {"Active" if SEG_A in key else "VIP"}
    assert "_braze_segment_id" in run.schema["properties"]

    bookmark = run.bookmark()
    assert floats_in(run.states) == [], "state must hold no floats (targets read them as Decimal)"
    etags = {
        o["Key"]: o["ETag"].strip('"')
        for o in s3.client().list_objects_v2(Bucket=bucket["name"])["Contents"]
    }
    files = {f["path"]: f for f in bookmark["files"]}
    for key in expected:
        entry = files[f"s3://{bucket['name']}/{key}"]
        assert entry["complete"] is True
        assert entry["etag"] == etags[key]
    assert "current" not in bookmark

    # Second run from that state: nothing new, nothing emitted, state unchanged.
    again = run_tap(config(s3, bucket["name"]), state=run.states[-1])
    assert again.records == []
    assert again.bookmark()["files"] == bookmark["files"]


def test_new_and_replaced_objects_are_read_on_the_next_run(s3, bucket, tmp_path):
    first = run_tap(config(s3, bucket["name"]))
    assert len(first.records) == 200
    # Braze writes a new export; one old key gets new content (another etag and size).
    new = generate_export(tmp_path / "c.zip", 30, segment="New", seed=3)
    s3.put(bucket["name"], f"segment-export/{SEG_A}/2026-11-30/users-00aa11.zip", new)
    replaced_key = f"segment-export/{SEG_B}/2026-11-29/users-91bd07.zip"
    replacement = generate_export(tmp_path / "d.zip", 15, segment="VIP", seed=4)
    s3.put(bucket["name"], replaced_key, replacement)

    second = run_tap(config(s3, bucket["name"]), state=first.states[-1])
    sources = {r["_sdc_source_file"].split("!")[0] for r in second.records}
    assert sources == {
        f"s3://{bucket['name']}/segment-export/{SEG_A}/2026-11-30/users-00aa11.zip",
        f"s3://{bucket['name']}/{replaced_key}",
    }
    assert len(second.records) == 45
    assert len(second.bookmark()["files"]) == 3


def test_credentials_and_endpoint_from_the_standard_aws_environment(s3, bucket, monkeypatch):
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    run = run_tap({"paths": [f"s3://{bucket['name']}/segment-export/**/*.zip"]})
    assert len(run.records) == 200


def test_wrong_endpoint_fails_naming_the_path_without_secrets(s3, bucket):
    cfg = config(s3, bucket["name"])
    cfg["s3"]["endpoint_url"] = "http://127.0.0.1:9"
    cfg["s3"]["aws_secret_access_key"] = "wrong-secret-never-shown-55"
    run = run_tap(cfg, expect_error=True)
    text = str(run.error)
    assert f"s3://{bucket['name']}/segment-export" in text
    assert "wrong-secret-never-shown-55" not in text
    assert s3.secret_key not in text


def test_missing_bucket_and_no_match_are_clear_errors(s3, bucket):
    run = run_tap(
        config(s3, bucket["name"], paths=["s3://no-such-bucket-h3/x/*.zip"]), expect_error=True
    )
    assert "s3://no-such-bucket-h3/x/*.zip" in str(run.error)
    run = run_tap(
        config(s3, bucket["name"], paths=[f"s3://{bucket['name']}/nothing/*.zip"]),
        expect_error=True,
    )
    assert "no file matches" in str(run.error)


def test_object_deleted_between_listing_and_reading_is_skipped_with_a_warning(
    s3, bucket, monkeypatch, caplog
):
    from tap_braze_csv.tap import TapBrazeCsv

    gone = f"segment-export/{SEG_B}/2026-11-29/users-91bd07.zip"
    # Discover first, so the run below lists the bucket once (its sync's listing).
    catalog = TapBrazeCsv(config=config(s3, bucket["name"])).catalog_dict
    real_find = RoutingSource.find

    def find_then_delete(self, patterns):
        refs = real_find(self, patterns)
        s3.delete(bucket["name"], gone)  # Braze's clean-up runs right after the listing
        return refs

    monkeypatch.setattr(RoutingSource, "find", find_then_delete)
    with caplog.at_level(logging.WARNING):
        run = run_tap(config(s3, bucket["name"]), catalog=catalog)
    assert len(run.records) == 120
    assert {r["_braze_segment_id"] for r in run.records} == {SEG_A}
    paths = [f["path"] for f in run.bookmark()["files"]]
    assert f"s3://{bucket['name']}/{gone}" not in paths
    assert any(
        "removed after being listed" in r.getMessage() and gone in r.getMessage()
        for r in caplog.records
    )


def test_gzip_and_pgp_objects(s3, gpg_key, tmp_path):
    name = s3.new_bucket()
    gz = generate_export(tmp_path / "vip-2026-11-28.csv.gz", 40, segment="VIP", seed=5)
    plain = generate_export(tmp_path / "churn-2026-11-28.zip", 25, segment="Churn", seed=6)
    enc = pgp_keys.encrypt_file(
        plain, tmp_path / "churn-2026-11-28.zip.pgp", armored=False, recipient=gpg_key.recipient
    )
    s3.put(name, "exports/vip-2026-11-28.csv.gz", gz)
    s3.put(name, "exports/churn-2026-11-28.zip.pgp", enc)
    run = run_tap(
        {
            "paths": [f"s3://{name}/exports/*"],
            "s3": s3.config(),
            "pgp_private_key": gpg_key.armored_private_key,
            "pgp_passphrase": gpg_key.passphrase,
        }
    )
    by_segment: dict[str, list] = {}
    for r in run.records:
        by_segment.setdefault(r["segment_name"], []).append(r)
    assert {k: len(v) for k, v in by_segment.items()} == {"vip": 40, "churn": 25}
    assert [r["braze_id"] for r in by_segment["churn"]] == [
        row["Appboy ID"] for row in read_export_rows(plain)
    ]
    assert all(r["_braze_segment_id"] is None for r in run.records)


def test_local_and_s3_paths_together(s3, bucket, tmp_path):
    local = generate_export(tmp_path / "local-2026-11-28.csv", 10, segment="Local", seed=8)
    run = run_tap(
        config(
            s3,
            bucket["name"],
            paths=[str(local), f"s3://{bucket['name']}/segment-export/{SEG_A}/*/*.zip"],
        )
    )
    assert len(run.records) == 130
    with make_source(config(s3, bucket["name"])) as source:
        assert isinstance(source, RoutingSource)


def test_list_prefix_and_open_for_other_readers(s3, bucket):
    """The API the REST export uses to read what Braze wrote under an object prefix."""
    with object_source(f"s3://{bucket['name']}/", {"s3": s3.config()}) as source:
        refs = source.list_prefix(f"s3://{bucket['name']}/segment-export/{SEG_A}/")
        assert [r.uri for r in refs] == [
            f"s3://{bucket['name']}/segment-export/{SEG_A}/2026-11-28/users-8f3a2c.zip"
        ]
        assert refs[0].etag
        assert refs[0].size > 0
        with source.open(refs[0]) as handle:
            assert handle.read(4) == b"PK\x03\x04"
        assert source.list_prefix(f"s3://{bucket['name']}/nothing-here/") == []


def test_braze_segment_id_from_key_layout():
    assert braze_segment_id("s3://b/segment-export/abc123/2026-01-02/users-x1.zip") == "abc123"
    assert braze_segment_id("/data/segment-export/abc/2026-01-02/users-x1.zip") == "abc"
    assert braze_segment_id("s3://b/exports/abc/2026-01-02/users-x1.zip") is None
    assert braze_segment_id("s3://b/segment-export/abc/users-x1.zip") is None


def test_missing_extra_names_the_package_to_install():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(BrazeCsvError, match=r"tap-braze-csv\[gcs\]"):
        object_source("gs://bucket/x.zip", {})


def test_unknown_scheme_is_an_error():
    with pytest.raises(BrazeCsvError, match="unsupported scheme ftp://"):
        make_source({"paths": ["ftp://host/x.zip"]}).find(["ftp://host/x.zip"])


def test_state_json_round_trip_has_no_floats(s3, bucket):
    run = run_tap(config(s3, bucket["name"]))
    text = json.dumps(run.states[-1])
    assert floats_in(json.loads(text)) == []
