"""Settings: secrets never leak, capabilities, `encoding` / `delimiter`, bad values fail at start
naming the setting, `sftp.*` declared as SftpSettings reads it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from braze_csv_testkit import HAND_MADE, write
from tap_braze_csv.errors import BrazeCsvError


def test_secrets_never_in_records_state_or_logs(
    tap_runner,
    export_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret_pass = "s3cr3t-Passphrase-XYZ"
    secret_key = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nNOTAREALKEYabc123\n-----END PGP PRIVATE KEY BLOCK-----"
    write(export_dir / "a.csv", HAND_MADE)
    with caplog.at_level(logging.DEBUG):
        run = tap_runner(
            {
                "paths": [str(export_dir / "*.csv")],
                "pgp_passphrase": secret_pass,
                "pgp_private_key": secret_key,
            }
        )
        bad = tap_runner(
            {"paths": [str(export_dir / "zzz*.csv")], "pgp_passphrase": secret_pass},
            expect_error=True,
        )
    out = capfd.readouterr()
    blob = "\n".join(
        [repr(run.messages), repr(run.state), caplog.text, out.out, out.err, str(bad.error)]
    )
    assert run.records
    assert secret_pass not in blob
    assert "NOTAREALKEY" not in blob


def test_batch_capability_is_not_advertised() -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    about = TapBrazeCsv._get_about_info()
    assert "batch" not in [str(c) for c in about.capabilities]
    assert "state" in [str(c) for c in about.capabilities]


def test_sftp_settings_fields_are_the_declared_sftp_object() -> None:
    """SftpSettings holds exactly the declared `sftp.*` keys, with the documented defaults.

    (Every key the code reads is checked for all plugins in tests/test_settings_documented.py.)
    """
    import dataclasses

    from tap_braze_csv.sources import SftpSettings
    from tap_braze_csv.tap import TapBrazeCsv

    props = TapBrazeCsv.config_jsonschema["properties"]
    sftp_props = props["sftp"]["properties"]
    assert {f.name for f in dataclasses.fields(SftpSettings)} == set(sftp_props)
    assert sftp_props["timeout"]["default"] == 30
    assert sftp_props["retries"]["default"] == 3
    assert sftp_props["retry_wait"]["default"] == 1.0
    for name in ("timeout", "retries", "retry_wait"):
        assert sftp_props[name]["description"]


def test_encoding_and_delimiter_settings(tap_runner, export_dir: Path) -> None:
    f = export_dir / "latin.csv"
    f.write_bytes("user_id;first_name;city\r\nu1;Zoé;Montréal\r\n".encode("latin-1"))
    run = tap_runner({"paths": [str(f)], "encoding": "latin-1", "delimiter": ";"})
    assert run.records[0]["first_name"] == "Zoé"
    assert run.records[0]["city"] == "Montréal"
    wrong = tap_runner({"paths": [str(f)], "delimiter": ";"}, expect_error=True)
    assert isinstance(wrong.error, BrazeCsvError)
    assert str(wrong.error).startswith(f"{f}: at or after line 1: is not UTF-8 text")
    assert "set `encoding`" in str(wrong.error)


def test_unknown_encoding_fails_at_start_naming_the_setting(export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    with pytest.raises(BrazeCsvError, match=r"^encoding: unknown text encoding 'latin-9000'"):
        TapBrazeCsv(config={"paths": [str(export_dir / "*.csv")], "encoding": "latin-9000"})


def test_invalid_segment_name_regex_fails_at_start_naming_the_setting(export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    with pytest.raises(ValueError, match=r"^segment_name_regex: not a valid Python regular"):
        TapBrazeCsv(config={"paths": [str(export_dir / "*.csv")], "segment_name_regex": "(a"})
