"""Braze's own S3 exports -> Lytics `braze_users`, through real `meltano run`.

A real S3-compatible server (moto's standalone server) holds zips under Braze's key layout
`segment-export/<SEGMENT_ID>/<YYYY-MM-dd>/users-<random>.zip`; the tap reads them with the
endpoint and credentials of the standard AWS environment variables (as a scheduled job on a
runner with an instance role would), and the target posts them to the Lytics sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Meltano, load_tap_test_module
from tap_braze_csv.sample import generate_export

STATE_ID = "sandbox:tap-braze-csv-to-target-lytics-users"
SEGMENT = "6123abcd0e0f1a2b3c4d5e6f"


s3_server = load_tap_test_module("s3_server")


@pytest.fixture(scope="module")
def s3() -> Iterator:
    server = s3_server.start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def configured(meltano: Meltano, s3, lytics_sandbox, tmp_path: Path):
    bucket = s3.new_bucket()
    key = f"segment-export/{SEGMENT}/2026-11-28/users-4f2a9c.zip"
    s3.put(bucket, key, generate_export(tmp_path / "users.zip", 250, segment="Active", seed=11))
    meltano.set(
        TAP_BRAZE_CSV_PATHS=[f"s3://{bucket}/segment-export/*/*/*.zip"],
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
        **s3.env(),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    return {"meltano": meltano, "bucket": bucket, "key": key}


def test_s3_export_to_lytics_then_nothing_new_then_braze_cleanup(
    configured, s3, lytics_sandbox, tmp_path: Path
):
    meltano, bucket, key = configured["meltano"], configured["bucket"], configured["key"]
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    assert s3.secret_key not in output
    assert lytics_sandbox.api_token not in output

    collected = lytics_sandbox.collected("braze_users")
    assert len(collected) == 250
    assert {r["_braze_segment_id"] for r in collected} == {SEGMENT}
    assert {r["_sdc_source_file"].split("!")[0] for r in collected} == {f"s3://{bucket}/{key}"}
    state = meltano.state(STATE_ID)
    (entry,) = state["singer_state"]["bookmarks"]["braze_users"]["files"]
    assert entry["path"] == f"s3://{bucket}/{key}"
    assert entry["complete"] is True
    assert isinstance(entry["etag"], str)
    assert isinstance(entry["mtime_ns"], int)

    # Second run: nothing new in the bucket, nothing is sent.
    before = lytics_sandbox.stats["collect_requests"]
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert lytics_sandbox.stats["collect_requests"] == before
    assert len(lytics_sandbox.collected("braze_users")) == 250

    # Braze deletes the old export and writes a new one: only the new one is read, the run
    # does not fail on the missing file, and the state forgets it.
    s3.delete(bucket, key)
    new_key = f"segment-export/{SEGMENT}/2026-11-29/users-77e0b1.zip"
    s3.put(bucket, new_key, generate_export(tmp_path / "new.zip", 40, segment="Active", seed=12))
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    collected = lytics_sandbox.collected("braze_users")
    assert len(collected) == 290
    files = meltano.state(STATE_ID)["singer_state"]["bookmarks"]["braze_users"]["files"]
    assert [f["path"] for f in files] == [f"s3://{bucket}/{new_key}"]
