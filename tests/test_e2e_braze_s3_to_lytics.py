"""Braze's own S3 exports -> Lytics `braze_users`, through real `meltano run`.

A real S3-compatible server (moto's standalone server) holds zips under Braze's key layout
`segment-export/<SEGMENT_ID>/<YYYY-MM-dd>/users-<random>.zip`; the tap reads them with the
endpoint and credentials of the standard AWS environment variables (as a scheduled job on a
runner with an instance role would), and the target posts them to the Lytics sandbox. One
export holds an unparsable value (kept raw) and a user over Lytics' 16 KB record limit
(reported and skipped).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Meltano, load_tap_test_module
from tap_braze_csv.sample import CUSTOM_HEADER, STANDARD_HEADER, generate_export, iter_rows

STATE_ID = "sandbox:tap-braze-csv-to-target-lytics-users"
SEGMENT = "6123abcd0e0f1a2b3c4d5e6f"
ODD_SEGMENT = "6123abcd0e0f1a2b3c4d0000"

s3_server = load_tap_test_module("s3_server")


@pytest.fixture(scope="module")
def s3() -> Iterator:
    server = s3_server.start_s3_server()
    try:
        yield server
    finally:
        server.stop()


def odd_export() -> bytes:
    """A Braze-shaped zip of 3 users: one fine, one with '12 sessions', one over 16 KB."""
    header = [*STANDARD_HEADER, *CUSTOM_HEADER]
    rows = list(iter_rows(3, seed=13))
    col = {name: i for i, name in enumerate(header)}
    for row, user in zip(rows, ("odd-fine", "odd-unparsed", "big-user"), strict=True):
        row[col["user_id"]] = user
    rows[1][col["session_count"]] = "12 sessions"
    rows[2][col["notes"]] = "x" * 20_000
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Odd.csv", text.getvalue().encode("utf-8-sig"))
    return buf.getvalue()


@pytest.fixture
def configured(meltano: Meltano, s3, lytics_sandbox, tmp_path: Path):
    bucket = s3.new_bucket()
    key = f"segment-export/{SEGMENT}/2026-11-28/users-4f2a9c.zip"
    odd_key = f"segment-export/{ODD_SEGMENT}/2026-11-28/users-0dd000.zip"
    s3.put(bucket, key, generate_export(tmp_path / "users.zip", 250, segment="Active", seed=11))
    s3.put(bucket, odd_key, odd_export())
    meltano.set(
        TAP_BRAZE_CSV_PATHS=[f"s3://{bucket}/segment-export/*/*/*.zip"],
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
        **s3.env(),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    return {"meltano": meltano, "bucket": bucket, "key": key, "odd_key": odd_key}


def test_s3_export_to_lytics_then_nothing_new_then_braze_cleanup(
    configured, s3, lytics_sandbox, tmp_path: Path
):
    meltano, bucket, key = configured["meltano"], configured["bucket"], configured["key"]
    odd_key = configured["odd_key"]
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    assert s3.secret_key not in output
    assert lytics_sandbox.api_token not in output

    collected = lytics_sandbox.collected("braze_users")
    assert len(collected) == 252  # 250 + 2 of the odd export (the 16 KB+ user is held back)
    main = [r for r in collected if r["_braze_segment_id"] == SEGMENT]
    assert len(main) == 250
    # where each row came from is the tap's `_sdc_source_file`: not sent to Lytics by default
    assert not [r for r in main if "_sdc_source_file" in r or "_sdc_source_lineno" in r]

    # An unparsable value does not stop the run: null, raw text kept, counted in the summary.
    odd = {r["external_id"]: r for r in collected if r["_braze_segment_id"] == ODD_SEGMENT}
    assert set(odd) == {"odd-fine", "odd-unparsed"}
    assert odd["odd-unparsed"]["session_count"] is None
    assert odd["odd-unparsed"]["_sdc_unparsed"] == {"session_count": "12 sessions"}
    assert "_sdc_unparsed" not in odd["odd-fine"]
    assert "1 value(s) kept unparsed (session_count=1)" in output

    # The user over Lytics' 16 KB record limit is reported by id and size, and counted.
    assert "Record REJECTED" in output
    assert "external_id='big-user'" in output
    assert "over Lytics' limit of 16 KB" in output
    assert "1 skipped over Lytics' 16 KB record limit" in output
    assert lytics_sandbox.stats["rejected_too_large"] == 0  # never sent

    state = meltano.state(STATE_ID)
    files = {f["path"]: f for f in state["singer_state"]["bookmarks"]["braze_users"]["files"]}
    entry = files[f"s3://{bucket}/{key}"]
    assert entry["complete"] is True
    assert isinstance(entry["etag"], str)
    assert isinstance(entry["mtime_ns"], int)

    # Second run: nothing new in the bucket, nothing is sent.
    before = lytics_sandbox.stats["collect_requests"]
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert lytics_sandbox.stats["collect_requests"] == before
    assert len(lytics_sandbox.collected("braze_users")) == 252

    # Braze deletes the old export and writes a new one: only the new one is read, the run
    # does not fail on the missing file, and the state forgets it.
    s3.delete(bucket, key)
    new_key = f"segment-export/{SEGMENT}/2026-11-29/users-77e0b1.zip"
    s3.put(bucket, new_key, generate_export(tmp_path / "new.zip", 40, segment="Active", seed=12))
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(lytics_sandbox.collected("braze_users")) == 292
    files = meltano.state(STATE_ID)["singer_state"]["bookmarks"]["braze_users"]["files"]
    assert sorted(f["path"] for f in files) == sorted(
        [f"s3://{bucket}/{new_key}", f"s3://{bucket}/{odd_key}"]
    )


def test_export_deleted_while_the_run_reads_another_is_skipped(
    meltano: Meltano, s3, lytics_sandbox, tmp_path: Path
):
    """Braze's clean-up deletes an export after the tap listed it, before it opened it."""
    import subprocess
    import time

    from e2e_helpers import MELTANO, ROOT

    bucket = s3.new_bucket()
    first = f"segment-export/{SEGMENT}/2026-11-28/users-aaaa01.zip"  # read first (sorted)
    doomed = f"segment-export/{SEGMENT}/2026-11-28/users-zzzz99.zip"
    s3.put(bucket, first, generate_export(tmp_path / "a.zip", 30_000, segment="A", seed=21))
    s3.put(bucket, doomed, generate_export(tmp_path / "z.zip", 10, segment="Z", seed=22))
    meltano.set(
        TAP_BRAZE_CSV_PATHS=[f"s3://{bucket}/segment-export/*/*/*.zip"],
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
        **s3.env(),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
    )
    proc = subprocess.Popen(
        [str(MELTANO), "run", "tap-braze-csv", "target-lytics-users"],
        cwd=ROOT,
        env=meltano.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first batch reaching Lytics proves both files were listed and the first is being
    # read (the pipe holds the tap back, so most of its 30,000 rows are still to come).
    deadline = time.monotonic() + 240
    while not lytics_sandbox.collected("braze_users") and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        time.sleep(0.05)
    s3.delete(bucket, doomed)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    assert len(lytics_sandbox.collected("braze_users")) == 30_000
    assert f"Skipping s3://{bucket}/{doomed}: it was removed after being listed" in out + err
    files = meltano.state(STATE_ID)["singer_state"]["bookmarks"]["braze_users"]["files"]
    assert [f["path"] for f in files] == [f"s3://{bucket}/{first}"]
