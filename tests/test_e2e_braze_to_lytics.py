"""Braze segment CSV exports (zip, gzip, PGP over SFTP) -> Lytics `braze_users`, through real `meltano run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import Meltano, load_tap_test_module
from tap_braze_csv.sample import generate_export, read_export_rows

STATE_ID = "sandbox:tap-braze-csv-to-target-lytics-users"


sftp_server = load_tap_test_module("sftp_server")
pgp_keys = load_tap_test_module("pgp_keys")


@pytest.fixture
def exports(tmp_path: Path):
    """An SFTP root with a Braze zip, a gzip and a PGP-encrypted zip; plus keys."""
    root = tmp_path / "sftp"
    (root / "exports").mkdir(parents=True)
    plain = tmp_path / "plain"
    zip_path = generate_export(
        root / "exports" / "segment-active-users-20261128.zip", 700, segment="Active Users", seed=1
    )
    gz_path = generate_export(
        root / "exports" / "segment-vip-20261128.csv.gz", 300, segment="VIP", seed=2
    )
    secret_zip = generate_export(
        plain / "segment-churn-risk-20261128.zip", 200, segment="Churn Risk", seed=3
    )
    key = pgp_keys.make_gpg_key(tmp_path)
    pgp_keys.encrypt_file(
        secret_zip, root / "exports" / "segment-churn-risk-20261128.zip.pgp", armored=False
    )
    ssh_private, ssh_public = sftp_server.make_ssh_key("ed25519")
    server = sftp_server.start_sftp_server(
        root, {"braze": {"authorized_keys": [ssh_public], "password": "sftp-secret-pw"}}
    )
    try:
        yield {
            "root": root,
            "server": server,
            "ssh_private": ssh_private,
            "pgp": key,
            "rows": {p.name: read_export_rows(p) for p in (zip_path, gz_path, secret_zip)},
        }
    finally:
        server.stop()
        pgp_keys.cleanup()


@pytest.fixture
def configured(meltano: Meltano, exports, lytics_sandbox) -> Meltano:
    server = exports["server"]
    meltano.set(
        TAP_BRAZE_CSV_PATHS=["/exports/*"],
        TAP_BRAZE_CSV_SFTP_HOST=server.host,
        TAP_BRAZE_CSV_SFTP_PORT=str(server.port),
        TAP_BRAZE_CSV_SFTP_USERNAME="braze",
        TAP_BRAZE_CSV_SFTP_PRIVATE_KEY=exports["ssh_private"],
        TAP_BRAZE_CSV_SFTP_KNOWN_HOSTS=server.host_key_line,
        TAP_BRAZE_CSV_PGP_PRIVATE_KEY=exports["pgp"].armored_private_key,
        TAP_BRAZE_CSV_PGP_PASSPHRASE=exports["pgp"].passphrase,
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
    )
    return meltano


def assert_no_secrets(text: str, exports, lytics_sandbox) -> None:
    for secret in (
        "sftp-secret-pw",
        exports["pgp"].passphrase,
        lytics_sandbox.api_token,
        exports["ssh_private"].splitlines()[1],
        exports["pgp"].armored_private_key.splitlines()[3],
    ):
        assert secret not in text


def test_sftp_zip_gzip_pgp_to_lytics_then_incremental(configured: Meltano, exports, lytics_sandbox):
    proc = configured.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_no_secrets(proc.stdout + proc.stderr, exports, lytics_sandbox)

    collected = lytics_sandbox.collected("braze_users")
    expected = [row for rows in exports["rows"].values() for row in rows]
    assert len(collected) == len(expected) == 1200
    for name, rows in exports["rows"].items():
        # rows arrive in file order; segment_name comes from the file name, minus the date
        segment = name.rsplit("-", 1)[0]
        got_rows = [r for r in collected if r["segment_name"] == segment]
        assert len(got_rows) == len(rows), name
        for row, got in zip(rows, got_rows, strict=True):
            assert got["braze_id"] == row["Appboy ID"]
            assert got["external_id"] == (row["user_id"] or None)
            assert got["email"] == (row["email"] or None)
            assert got["time_zone"] == (row["timezone"] or None)
            if row["phone_number"].startswith("'"):
                # Braze's CSV-injection guard is undone.
                assert got["phone_number"] == row["phone_number"][1:]
    # the tap's `_sdc_source_file` (a path on the runner) stays out of Lytics by default
    assert not [k for r in collected for k in r if k.startswith("_sdc_source_")]
    assert configured.state(STATE_ID), "Meltano keeps the files read in its system database"

    # Second run: every file was fully read, nothing is sent again.
    before = lytics_sandbox.stats["collect_requests"]
    proc = configured.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert lytics_sandbox.stats["collect_requests"] == before
    assert len(lytics_sandbox.collected("braze_users")) == 1200

    # A new export arrives: only its rows are sent.
    generate_export(
        exports["root"] / "exports" / "segment-new-20261129.csv", 50, segment="New", seed=9
    )
    proc = configured.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(lytics_sandbox.collected("braze_users")) == 1250


def test_wrong_sftp_password_fails_clearly_without_leaking(
    configured: Meltano, exports, lytics_sandbox
):
    configured.set(
        TAP_BRAZE_CSV_SFTP_PRIVATE_KEY="", TAP_BRAZE_CSV_SFTP_PASSWORD="not-the-password-123"
    )
    proc = configured.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "127.0.0.1" in output
    assert "not-the-password-123" not in output
    assert_no_secrets(output, exports, lytics_sandbox)
    assert lytics_sandbox.collected("braze_users") == []


def test_wrong_lytics_token_names_the_setting(configured: Meltano, exports, lytics_sandbox):
    configured.set(TARGET_LYTICS_USERS_API_TOKEN="wrong-token-abc123")
    proc = configured.run("run", "tap-braze-csv", "target-lytics-users")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "api_token" in output
    assert "wrong-token-abc123" not in output
    assert_no_secrets(output, exports, lytics_sandbox)
