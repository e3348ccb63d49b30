"""PGP-encrypted exports made with the real gpg binary: decryption, failures, no leaked secrets."""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgp_keys
import pytest
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.openers import iter_csv_members
from tap_braze_csv.sources import LocalSource

CSV_A = "\ufeffAppboy ID,user_id,email\r\n1,u1,a@example.com\r\n"
CSV_B = "braze_id,first_name\n2,Zoë\n"


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Route tempfile to a (short) directory the test can inspect for leftovers."""
    scratch = Path(tempfile.mkdtemp(prefix="bcsv-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pgp_config(key: pgp_keys.GpgKey, **overrides: Any) -> dict[str, Any]:
    cfg = {"pgp_private_key": key.armored_private_key, "pgp_passphrase": key.passphrase}
    cfg.update(overrides)
    return cfg


def read_all(path: Path, config: dict[str, Any]) -> list[tuple[str, str]]:
    with LocalSource() as source:
        (ref,) = source.find([str(path)])
        with (
            source.open(ref) as raw,
            contextlib.closing(iter_csv_members(ref, raw, config)) as members,
        ):
            return [(name, text.read()) for name, text in members]


def plain_inputs(tmp_path: Path) -> dict[str, tuple[Path, list[tuple[str, str]]]]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    csv_path = src / "users.csv"
    csv_path.write_text(CSV_A, encoding="utf-8")
    zip_path = src / "users.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("users-2.csv", CSV_B)
        zf.writestr("users-1.csv", CSV_A)
    gz_path = src / "users.csv.gz"
    gz_path.write_bytes(gzip.compress(CSV_B.encode()))
    return {
        "csv": (csv_path, [("", CSV_A[1:])]),
        "zip": (zip_path, [("users-1.csv", CSV_A[1:]), ("users-2.csv", CSV_B)]),
        "gz": (gz_path, [("", CSV_B)]),
    }


@pytest.mark.parametrize("inner", ["csv", "zip", "gz"])
@pytest.mark.parametrize(("armored", "suffix"), [(True, ".asc"), (False, ".pgp"), (False, ".gpg")])
def test_decrypts_csv_zip_and_gzip_armoured_and_binary(
    tmp_path: Path,
    private_tmp: Path,
    gpg_key: pgp_keys.GpgKey,
    inner: str,
    armored: bool,
    suffix: str,
) -> None:
    src, expected = plain_inputs(tmp_path)[inner]
    encrypted = tmp_path / (src.name + suffix)
    pgp_keys.encrypt_file(src, encrypted, armored, recipient=gpg_key.recipient)
    assert encrypted.read_bytes().startswith(b"-----BEGIN PGP MESSAGE") is armored
    assert read_all(encrypted, pgp_config(gpg_key)) == expected
    assert list(private_tmp.iterdir()) == []  # GNUPGHOME and plaintext removed


def test_key_can_be_a_file_path_and_name_without_inner_suffix(
    tmp_path: Path, private_tmp: Path, gpg_key: pgp_keys.GpgKey
) -> None:
    src, expected = plain_inputs(tmp_path)["zip"]
    encrypted = tmp_path / "segment-export.pgp"  # inner kind found from the decrypted bytes
    pgp_keys.encrypt_file(src, encrypted, False, recipient=gpg_key.recipient)
    key_file = tmp_path / "private.asc"
    key_file.write_text(gpg_key.armored_private_key)
    assert read_all(encrypted, pgp_config(gpg_key, pgp_private_key=str(key_file))) == expected


def test_key_pasted_on_one_line_with_escaped_newlines(
    tmp_path: Path, gpg_key: pgp_keys.GpgKey
) -> None:
    encrypted = tmp_path / "users.csv.asc"
    pgp_keys.encrypt_file(plain_inputs(tmp_path)["csv"][0], encrypted, True, gpg_key.recipient)
    one_line = gpg_key.armored_private_key.replace("\n", "\\n")
    assert read_all(encrypted, pgp_config(gpg_key, pgp_private_key=one_line)) == [("", CSV_A[1:])]


def test_gnupghome_is_private_while_in_use_and_removed_after(
    tmp_path: Path, private_tmp: Path, gpg_key: pgp_keys.GpgKey
) -> None:
    src, _ = plain_inputs(tmp_path)["csv"]
    encrypted = tmp_path / "users.csv.gpg"
    pgp_keys.encrypt_file(src, encrypted, False, recipient=gpg_key.recipient)
    with LocalSource() as source:
        (ref,) = source.find([str(encrypted)])
        with source.open(ref) as raw:
            members = iter_csv_members(ref, raw, pgp_config(gpg_key))
            _, text = next(members)
            assert text.readline() == "Appboy ID,user_id,email\r\n"
            homes = list(private_tmp.iterdir())
            assert len(homes) == 1
            assert stat.S_IMODE(homes[0].stat().st_mode) == 0o700
            assert gpg_key.passphrase not in homes[0].name
            members.close()  # stop early: clean-up must still happen
    assert list(private_tmp.iterdir()) == []


def _encrypted_csv(tmp_path: Path, key: pgp_keys.GpgKey, armored: bool = True) -> Path:
    src, _ = plain_inputs(tmp_path)["csv"]
    encrypted = tmp_path / "users.csv.asc"
    pgp_keys.encrypt_file(src, encrypted, armored, recipient=key.recipient)
    return encrypted


def test_wrong_key_is_a_clear_error(
    tmp_path: Path,
    private_tmp: Path,
    gpg_key: pgp_keys.GpgKey,
    other_gpg_key: pgp_keys.GpgKey,
) -> None:
    encrypted = _encrypted_csv(tmp_path, other_gpg_key)
    with pytest.raises(BrazeCsvError, match="wrong pgp_private_key") as exc:
        read_all(encrypted, pgp_config(gpg_key))
    assert str(encrypted) in str(exc.value)
    assert gpg_key.recipient in str(exc.value)  # names the key it tried
    assert list(private_tmp.iterdir()) == []


def test_wrong_passphrase_is_a_clear_error(
    tmp_path: Path, private_tmp: Path, gpg_key: pgp_keys.GpgKey
) -> None:
    encrypted = _encrypted_csv(tmp_path, gpg_key)
    with pytest.raises(BrazeCsvError, match="pgp_passphrase is wrong") as exc:
        read_all(encrypted, pgp_config(gpg_key, pgp_passphrase="not-the-passphrase"))
    assert str(encrypted) in str(exc.value)
    assert "not-the-passphrase" not in str(exc.value)


def test_missing_passphrase_for_a_protected_key(
    tmp_path: Path, private_tmp: Path, gpg_key: pgp_keys.GpgKey
) -> None:
    encrypted = _encrypted_csv(tmp_path, gpg_key)
    with pytest.raises(BrazeCsvError, match="set pgp_passphrase") as exc:
        read_all(encrypted, pgp_config(gpg_key, pgp_passphrase=None))
    assert str(encrypted) in str(exc.value)


def test_missing_key_for_an_encrypted_file(tmp_path: Path, gpg_key: pgp_keys.GpgKey) -> None:
    encrypted = _encrypted_csv(tmp_path, gpg_key, armored=False)
    with pytest.raises(BrazeCsvError, match="PGP-encrypted but pgp_private_key is not set") as exc:
        read_all(encrypted, {})
    assert str(encrypted) in str(exc.value)


def test_key_setting_that_is_neither_key_nor_file(tmp_path: Path, gpg_key: pgp_keys.GpgKey) -> None:
    encrypted = _encrypted_csv(tmp_path, gpg_key)
    with pytest.raises(BrazeCsvError, match="neither an armoured PGP private key"):
        read_all(encrypted, pgp_config(gpg_key, pgp_private_key=str(tmp_path / "no-such-key")))


def test_public_key_only_is_refused(tmp_path: Path, gpg_key: pgp_keys.GpgKey) -> None:
    public = pgp_keys._gpg(
        pgp_keys._HOMES[gpg_key.recipient], "--armor", "--export", gpg_key.recipient
    ).stdout.decode()
    encrypted = _encrypted_csv(tmp_path, gpg_key)
    with pytest.raises(BrazeCsvError, match="holds no PGP private key") as exc:
        read_all(encrypted, pgp_config(gpg_key, pgp_private_key=public))
    assert str(encrypted) in str(exc.value)


def test_truncated_and_fake_pgp_files(tmp_path: Path, gpg_key: pgp_keys.GpgKey) -> None:
    src = tmp_path / "big.csv"
    src.write_text("braze_id\n" + "".join(f"{i}\n" for i in range(100000)))
    encrypted = tmp_path / "big.csv.pgp"
    pgp_keys.encrypt_file(src, encrypted, False, recipient=gpg_key.recipient)
    data = encrypted.read_bytes()
    truncated = tmp_path / "truncated.csv.pgp"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BrazeCsvError, match="truncated or corrupt") as exc:
        read_all(truncated, pgp_config(gpg_key))
    assert str(truncated) in str(exc.value)

    fake = tmp_path / "fake.csv.gpg"
    fake.write_text("braze_id\n1\n")
    with pytest.raises(BrazeCsvError, match="not a PGP-encrypted file") as exc:
        read_all(fake, pgp_config(gpg_key))
    assert str(fake) in str(exc.value)


@pytest.mark.parametrize(
    ("kind", "gpg_args", "expected"),
    [
        ("signed", ["--sign"], "is a signed PGP file but not encrypted"),
        ("clearsigned", ["--clearsign"], "is a signed PGP file but not encrypted"),
        ("stored", ["--store"], "is a stored (gpg --store) PGP file but not encrypted"),
        ("symmetric", ["--symmetric"], "is encrypted with a passphrase only (gpg --symmetric)"),
    ],
)
def test_pgp_file_that_is_not_encrypted_for_a_key_says_so(
    tmp_path: Path, gpg_key: pgp_keys.GpgKey, kind: str, gpg_args: list[str], expected: str
) -> None:
    src = tmp_path / "users.csv"
    src.write_text(CSV_B, encoding="utf-8")
    path = tmp_path / f"users-{kind}.csv.pgp"
    home = pgp_keys._HOMES[gpg_key.recipient]
    # (A symmetric file whose passphrase is pgp_passphrase does decrypt: use another one.)
    phrase = "another passphrase 7" if kind == "symmetric" else gpg_key.passphrase
    loopback = ["--pinentry-mode", "loopback", "--passphrase", phrase]
    pgp_keys._gpg(home, *loopback, "--yes", "--output", str(path), *gpg_args, str(src))
    with pytest.raises(BrazeCsvError) as exc:
        read_all(path, pgp_config(gpg_key))
    message = str(exc.value)
    assert message.startswith(f"{path}: {expected}")  # was "probably truncated or corrupt"
    assert "truncated" not in message
    assert gpg_key.recipient in message  # the key it should have been encrypted for
    assert gpg_key.passphrase not in message


def _secret_fragments(key: pgp_keys.GpgKey) -> list[str]:
    body = [
        line
        for line in key.armored_private_key.splitlines()
        if line and not line.startswith("-----") and ":" not in line
    ]
    return [key.passphrase, *body[1:-1]]


def test_secrets_never_in_messages_or_logs(
    tmp_path: Path,
    private_tmp: Path,
    gpg_key: pgp_keys.GpgKey,
    other_gpg_key: pgp_keys.GpgKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # includes python-gnupg's own DEBUG logging
    ok = _encrypted_csv(tmp_path, gpg_key)
    assert read_all(ok, pgp_config(gpg_key)) == [("", CSV_A[1:])]
    messages: list[str] = []
    wrong_key = tmp_path / "wrong" / "users.csv.asc"
    wrong_key.parent.mkdir()
    pgp_keys.encrypt_file(tmp_path / "src" / "users.csv", wrong_key, True, other_gpg_key.recipient)
    for path, cfg in [
        (wrong_key, pgp_config(gpg_key)),
        (ok, pgp_config(gpg_key, pgp_passphrase=gpg_key.passphrase + "x")),
        (ok, pgp_config(gpg_key, pgp_passphrase=None)),
    ]:
        with pytest.raises(BrazeCsvError) as exc:
            read_all(path, cfg)
        messages.append(str(exc.value))
        messages.append(repr(exc.value))
    assert any(r.name == "gnupg" for r in caplog.records)  # the library did log
    haystack = caplog.text + "\n".join(messages)
    for fragment in _secret_fragments(gpg_key):
        assert fragment not in haystack
    assert len(_secret_fragments(gpg_key)) > 3
    assert os.listdir(private_tmp) == []


def test_long_temp_dir_falls_back_to_a_short_gnupghome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpg_key: pgp_keys.GpgKey
) -> None:
    long_tmp = tmp_path / ("x" * 80)
    long_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    encrypted = _encrypted_csv(tmp_path, gpg_key)
    assert read_all(encrypted, pgp_config(gpg_key)) == [("", CSV_A[1:])]
