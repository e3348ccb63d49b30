"""Local files: globbing, and opening real CSV / zip / gzip files, including broken ones."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.openers import iter_csv_members
from tap_braze_csv.routing import make_source
from tap_braze_csv.sftp import SftpSource
from tap_braze_csv.sources import FileRef, LocalSource

CSV_A = '\ufeffAppboy ID,user_id,email\r\n1,u1,a@example.com\r\n2,u2,"b, with comma"\r\n'
CSV_B = 'braze_id,first_name\n3,"multi\nline"\n'


def read_members(path: Path, config: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    with LocalSource() as source:
        (ref,) = source.find([str(path)])
        with (
            source.open(ref) as raw,
            contextlib.closing(iter_csv_members(ref, raw, config or {})) as members,
        ):
            return [(name, text.read()) for name, text in members]


def parse_all(path: Path, seen: list[str]) -> None:
    """Run every member through csv.reader, noting the members reached."""
    with LocalSource() as source:
        (ref,) = source.find([str(path)])
        with source.open(ref) as raw:
            for member, text in iter_csv_members(ref, raw, {}):
                seen.append(member)
                for _row in csv.reader(text):
                    pass


def make_zip(
    path: Path, members: dict[str, str | bytes], *, method: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return path


# -- finding -----------------------------------------------------------------------------------


def tree(root: Path) -> None:
    for rel in [
        "a/users-1.csv",
        "a/users-2.csv.gz",
        "a/b/users-3.zip",
        "a/b/c/deep.csv",
        "a/.hidden.csv",
        "a/notes.txt",
        "top.csv",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("braze_id\n1\n")
    (root / "a" / "dir.csv").mkdir()  # a directory whose name matches *.csv


def test_local_glob_recursive_sorted_deduplicated(tmp_path: Path) -> None:
    tree(tmp_path)
    with LocalSource() as source:
        refs = source.find(
            [f"{tmp_path}/a/**/*.csv", f"{tmp_path}/a/users-1.csv", f"{tmp_path}/**/*.gz"]
        )
    paths = [Path(r.path).relative_to(tmp_path).as_posix() for r in refs]
    assert paths == ["a/b/c/deep.csv", "a/users-1.csv", "a/users-2.csv.gz"]
    ref = refs[1]
    st = os.stat(tmp_path / "a/users-1.csv")
    assert (ref.size, ref.mtime) == (st.st_size, st.st_mtime)
    assert ref.uri == str(tmp_path / "a/users-1.csv")
    assert ref.origin == ""


def test_local_relative_patterns_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    refs = LocalSource().find(["a/*.csv", "a/b/*", "top.csv"])
    assert [r.path for r in refs] == [
        str(tmp_path / "a/b/users-3.zip"),
        str(tmp_path / "a/users-1.csv"),
        str(tmp_path / "top.csv"),
    ]


def test_names_with_glob_characters_are_found_literally(tmp_path: Path) -> None:
    path = tmp_path / "VIP [EU]-2024-05-01.zip"
    path.write_bytes(b"x")
    (tmp_path / "VIP E-2024-05-01.zip").write_bytes(b"y")  # what the glob reading would match
    assert [r.path for r in LocalSource().find([str(path)])] == [
        str(tmp_path / "VIP E-2024-05-01.zip")
    ]
    (tmp_path / "VIP E-2024-05-01.zip").unlink()
    assert [r.path for r in LocalSource().find([str(path)])] == [str(path)]
    assert [r.path for r in LocalSource().find(str(path))] == [str(path)]  # a lone string


def test_local_missing_literal_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "users.zip"
    with pytest.raises(BrazeCsvError, match="no such file") as exc:
        LocalSource().find([str(missing)])
    assert str(missing) in str(exc.value)


def test_local_pattern_matching_nothing_is_an_error(tmp_path: Path) -> None:
    tree(tmp_path)
    pattern = f"{tmp_path}/a/*.parquet"
    with pytest.raises(BrazeCsvError, match="no file matches") as exc:
        LocalSource().find([f"{tmp_path}/a/*.csv", pattern])
    assert pattern in str(exc.value)


def test_local_directory_literal_is_an_error_suggesting_a_glob(tmp_path: Path) -> None:
    tree(tmp_path)
    with pytest.raises(BrazeCsvError, match=r"is a directory; give a glob such as .*/a/\*\.zip"):
        LocalSource().find([str(tmp_path / "a")])


def test_local_open_refuses_a_file_changed_since_listing(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("braze_id\n1\n")
    source = LocalSource()
    (ref,) = source.find([str(path)])
    path.write_text("braze_id\n1\n2\n")
    with pytest.raises(BrazeCsvError, match="changed since it was listed") as exc:
        source.open(ref)
    assert str(path) in str(exc.value)


def test_make_source_local_unless_sftp_is_set() -> None:
    assert isinstance(make_source({"paths": ["x"]}), LocalSource)
    assert isinstance(make_source({"paths": ["x"], "sftp": {}}), LocalSource)
    assert isinstance(make_source({"sftp": {"host": None, "username": ""}}), LocalSource)
    defaults_only = {"port": 22, "allow_unknown_host_key": False, "timeout": 30}
    assert isinstance(make_source({"sftp": defaults_only}), LocalSource)
    source = make_source({"sftp": {"host": "127.0.0.1", "username": "u", "password": "p"}})
    assert isinstance(source, SftpSource)
    assert source.origin == "sftp://u@127.0.0.1:22"
    with pytest.raises(BrazeCsvError, match=r"sftp\.username is required"):
        make_source({"sftp": {"host": "127.0.0.1", "password": "p"}})
    with pytest.raises(BrazeCsvError, match=r"set sftp\.password or sftp\.private_key"):
        make_source({"sftp": {"host": "127.0.0.1", "username": "u"}})


def test_file_ref_uri() -> None:
    assert FileRef("/x/a.csv", 1, 2.0).uri == "/x/a.csv"
    ref = FileRef("/x/a.csv", 1, 2.0, "sftp://u@h:2222")
    assert ref.uri == "sftp://u@h:2222/x/a.csv"


# -- opening -----------------------------------------------------------------------------------


def test_plain_csv_keeps_crlf_and_drops_bom(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(CSV_A.encode("utf-8"))
    [(member, text)] = read_members(path)
    assert member == ""
    assert text == CSV_A[1:]  # BOM gone, \r\n kept for csv
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[2] == ["2", "u2", "b, with comma"]


def test_zip_with_several_csvs_in_name_order(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "segment-export.zip",
        {
            "users-2.csv": CSV_B,
            "sub/": b"",
            "README.txt": "not csv",
            "__MACOSX/._users-1.csv": b"\x00\x05junk",
            "users-1.csv": CSV_A.encode(),
            "sub/users-0.CSV": CSV_B,
        },
    )
    members = read_members(path)
    assert [m for m, _ in members] == ["sub/users-0.CSV", "users-1.csv", "users-2.csv"]
    assert members[1][1] == CSV_A[1:]
    assert list(csv.reader(io.StringIO(members[2][1]))) == [
        ["braze_id", "first_name"],
        ["3", "multi\nline"],
    ]


def test_zip_member_streams_are_readable_by_csv_reader(tmp_path: Path) -> None:
    rows = "".join(f"{i},user{i}\n" for i in range(20000))
    path = make_zip(tmp_path / "big.zip", {"users.csv": "braze_id,external_id\n" + rows})
    with LocalSource() as source:
        (ref,) = source.find([str(path)])
        with source.open(ref) as raw:
            counts = [
                sum(1 for _ in csv.reader(text)) for _, text in iter_csv_members(ref, raw, {})
            ]
    assert counts == [20001]


def test_zip_without_csv_is_an_error_listing_its_members(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "empty.zip", {"notes.txt": "x", "data.json": "{}"})
    with pytest.raises(BrazeCsvError, match=r"holds no \.csv file") as exc:
        read_members(path)
    assert str(path) in str(exc.value)
    assert "notes.txt" in str(exc.value)


def test_truncated_zip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    good = make_zip(tmp_path / "good.zip", {"users.csv": CSV_A * 200})
    data = good.read_bytes()
    bad = tmp_path / "truncated.zip"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(BrazeCsvError, match="not a readable zip file") as exc:
        read_members(bad)
    assert str(bad) in str(exc.value)


def _flip_byte_in_member_data(path: Path, member: str, at: float = 0.5) -> None:
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    pos = start + int(info.compress_size * at)
    data[pos] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_zip_member_fails_mid_read_naming_file_and_member(
    tmp_path: Path, method: int
) -> None:
    body = "braze_id,email\n" + "".join(f"{i},user{i}@example.com\n" for i in range(5000))
    path = make_zip(tmp_path / "crc.zip", {"a.csv": CSV_B, "b.csv": body}, method=method)
    _flip_byte_in_member_data(path, "b.csv")
    seen: list[str] = []
    with pytest.raises(BrazeCsvError) as exc:
        parse_all(path, seen)
    assert seen == ["a.csv", "b.csv"]  # the good member was read in full first
    message = str(exc.value)
    assert str(path) in message
    assert "zip member b.csv" in message
    assert "corrupt" in message or "truncated" in message


def test_gzip_csv(tmp_path: Path) -> None:
    path = tmp_path / "users.csv.gz"
    path.write_bytes(gzip.compress(CSV_A.encode()))
    assert read_members(path) == [("", CSV_A[1:])]


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    data = gzip.compress(("braze_id\n" + "x" * 100000 + "\n").encode() * 3)
    path = tmp_path / "users.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BrazeCsvError, match="truncated") as exc:
        read_members(path)
    assert str(path) in str(exc.value)


def test_corrupt_gzip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(os.urandom(200000).hex().encode()))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path = tmp_path / "users.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(BrazeCsvError, match=r"corrupt compressed data|not UTF-8") as exc:
        read_members(path)
    assert str(path) in str(exc.value)


def test_non_utf8_bytes_are_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("braze_id,city\n1,Zürich\n".encode("latin-1"))
    with pytest.raises(BrazeCsvError, match="is not UTF-8 text") as exc:
        read_members(path)
    assert str(path) in str(exc.value)


def test_content_is_sniffed_when_the_name_says_nothing(tmp_path: Path) -> None:
    zipped = make_zip(tmp_path / "export-download", {"users.csv": CSV_B})
    assert read_members(zipped) == [("users.csv", CSV_B)]
    gz = tmp_path / "users.csv"  # gzip bytes behind a .csv name
    gz.write_bytes(gzip.compress(CSV_B.encode()))
    assert read_members(gz) == [("", CSV_B)]


class _NonSeekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: Any) -> int:
        chunk = self._src.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_zip_from_a_non_seekable_stream_is_spooled(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "remote.zip", {"b.csv": CSV_B, "a.csv": CSV_A})
    ref = FileRef("/remote/remote.zip", path.stat().st_size, 0.0, "sftp://u@h:22")
    raw = io.BufferedReader(_NonSeekable(path.read_bytes()))
    members = [(m, t.read()) for m, t in iter_csv_members(ref, raw, {})]
    assert members == [("a.csv", CSV_A[1:]), ("b.csv", CSV_B)]


def test_member_streams_close_as_iteration_moves_on(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "two.zip", {"a.csv": CSV_B, "b.csv": CSV_B})
    source = LocalSource()
    (ref,) = source.find([str(path)])
    with source.open(ref) as raw:
        gen = iter_csv_members(ref, raw, {})
        _, first = next(gen)
        assert not first.closed
        next(gen)
        assert first.closed
        gen.close()


def _read_with(path: Path, encoding: str | None) -> list[tuple[str, str]]:
    with LocalSource() as source:
        (ref,) = source.find([str(path)])
        with source.open(ref) as raw:
            return [(m, t.read()) for m, t in iter_csv_members(ref, raw, {"encoding": encoding})]


def test_text_streams_use_the_encoding_setting(tmp_path: Path) -> None:
    latin = "braze_id,city\n1,Zürich\n"
    path = tmp_path / "latin1.csv"
    path.write_bytes(latin.encode("latin-1"))
    assert _read_with(path, "latin-1") == [("", latin)]
    zipped = make_zip(tmp_path / "l.zip", {"a.csv": latin.encode("cp1252")})
    assert _read_with(zipped, "cp1252") == [("a.csv", latin)]
    gz = tmp_path / "l.csv.gz"
    gz.write_bytes(gzip.compress(latin.encode("utf-16")))
    assert _read_with(gz, "utf-16") == [("", latin)]
    # UTF-8 under any spelling drops the BOM
    path.write_bytes("\ufeffbraze_id\n1\n".encode())
    assert _read_with(path, "UTF8") == [("", "braze_id\n1\n")]
    path.write_bytes(b"braze_id\n\x81\n")
    with pytest.raises(BrazeCsvError, match="is not cp1252 text") as exc:
        _read_with(path, "cp1252")
    assert str(path) in str(exc.value)


def test_unknown_encoding_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("braze_id\n1\n")
    with pytest.raises(BrazeCsvError, match=r"^encoding: unknown text encoding 'klingon'"):
        _read_with(path, "klingon")


def test_local_runs_do_not_import_paramiko(tmp_path: Path) -> None:
    """paramiko/cryptography are only imported when `sftp` is set (start-up time and memory)."""
    import subprocess
    import sys

    path = tmp_path / "VIP-2024-05-01.csv"
    path.write_text(CSV_B)
    script = f"""
import contextlib, io, sys
from tap_braze_csv.tap import TapBrazeCsv
tap = TapBrazeCsv(config={{"paths": [{str(path)!r}], "sftp": {{"port": 22}}}})
with contextlib.redirect_stdout(io.StringIO()) as out:
    tap.sync_all()
assert '"RECORD"' in out.getvalue()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("paramiko", "cryptography")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
