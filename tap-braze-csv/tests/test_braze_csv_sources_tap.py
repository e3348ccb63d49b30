"""The whole tap over the file layer: a PGP-encrypted Braze zip on a real SFTP server."""

from __future__ import annotations

import csv
import json
import logging
import zipfile
from pathlib import Path

import pgp_keys
import pytest
from braze_csv_source_fixtures import KEY_PASSPHRASE, SFTP_PASSWORD, SftpTestServer

DATA = Path(__file__).parent / "data" / "VIP Users-2024-05-01.csv"


def test_tap_reads_encrypted_zip_from_sftp_without_leaking_secrets(
    sftp: SftpTestServer,
    tmp_path: Path,
    gpg_key: pgp_keys.GpgKey,
    tap_runner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plain = tmp_path / "VIP Users-2024-05-01.zip"
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(DATA, "users-0.csv")
    encrypted = tmp_path / "VIP Users-2024-05-01.zip.pgp"
    pgp_keys.encrypt_file(plain, encrypted, False, recipient=gpg_key.recipient)
    sftp.put("exports/2024-05-01/VIP Users-2024-05-01.zip.pgp", encrypted.read_bytes())
    sftp.put("exports/2024-05-01/readme.txt", "not matched")

    config = {
        "paths": ["/exports/**/*.pgp"],
        "sftp": sftp.key_config("ed25519_openssh_encrypted"),
        "pgp_private_key": gpg_key.armored_private_key,
        "pgp_passphrase": gpg_key.passphrase,
    }
    run = tap_runner(config)
    with DATA.open(encoding="utf-8-sig", newline="") as f:
        expected_rows = sum(1 for _ in csv.reader(f)) - 1
    assert len(run.records) == expected_rows > 0
    uri = f"sftp://keyuser@127.0.0.1:{sftp.port}/exports/2024-05-01/VIP Users-2024-05-01.zip.pgp"
    assert {r["_sdc_source_file"] for r in run.records} == {f"{uri}!users-0.csv"}
    assert run.records[0]["braze_id"] == "5f0000000000000000000000"

    # the second run skips the file: state recorded it as read
    again = tap_runner(config, state=run.state)
    assert again.records == []

    haystack = json.dumps(run.messages) + json.dumps(run.state) + caplog.text
    key_lines = [
        line
        for line in sftp.client_keys["ed25519_openssh_encrypted"].splitlines()
        if "-----" not in line
    ]
    pgp_lines = [
        line
        for line in gpg_key.armored_private_key.splitlines()
        if len(line) > 20 and "-----" not in line
    ]
    for secret in [SFTP_PASSWORD, KEY_PASSPHRASE, gpg_key.passphrase, *key_lines, *pgp_lines]:
        assert secret not in haystack
