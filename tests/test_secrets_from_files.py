"""Every secret setting given as it comes out of a mounted secret file (with a trailing newline).

Each plugin runs as a real process against the loopback emulators, SFTP server, gpg and
PostgreSQL. The runs must work (surrounding whitespace is removed where the config is
loaded) and the secret's text must appear nowhere in stdout (records and STATE), stderr or
the state. Wrong secrets and secrets with a line break inside fail naming the setting, and
still never print the value.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import BIN, load_tap_test_module, pipe
from tap_braze_csv.sample import generate_export, sample_profiles

sftp_server = load_tap_test_module("sftp_server")
pgp_keys = load_tap_test_module("pgp_keys")

PG_PASSWORD = "pg-query-secret-7c1"
PG_SSL_PASSWORD = "pg-sslkey-secret-9d4"
SFTP_PASSWORD = "sftp-file-secret-3b8"
SSH_KEY_PASSPHRASE = "ssh-key-phrase-5e2"


def nl(value: str) -> str:
    """The value as read from a secret file."""
    return value + "\n"


def write(tmp: Path, name: str, config: dict) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


def assert_absent(output: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret.strip(), "a secret to look for"
        assert secret.strip() not in output, f"a secret leaked: {secret[:6]}..."


def run(args: list[str], stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


# -- Lytics -> Braze ------------------------------------------------------------------------


def test_lytics_to_braze_secrets_with_trailing_newline(
    lytics_sandbox, braze_sandbox, pg_url: str, tmp_path: Path
):
    lytics_sandbox.add_audience(
        "vip", name="VIP", members=[{"_uid": f"l{i}", "braze_id": f"u{i}"} for i in range(5)]
    )
    tap_cfg = write(
        tmp_path,
        "tap",
        {
            "api_url": lytics_sandbox.url,
            "api_token": nl(lytics_sandbox.api_token),
            "audiences": ["vip"],
        },
    )
    # libpq takes passwords as query parameters too; trust auth ignores them, the log must not.
    store_url = with_query(pg_url, f"password={PG_PASSWORD}&sslpassword={PG_SSL_PASSWORD}")
    target_cfg = write(
        tmp_path,
        "target",
        {
            "rest_endpoint": braze_sandbox.url,
            "api_key": nl(braze_sandbox.api_key),
            "store_url": nl(store_url),
        },
    )
    tap_rc, target_rc, out, err = pipe(
        [str(BIN / "tap-lytics-audience"), "--config", tap_cfg],
        [str(BIN / "target-braze-audience"), "--config", target_cfg],
    )
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    assert {uid for uid, a in braze_sandbox.users().items() if a.get("lytics_segments")} == {
        f"u{i}" for i in range(5)
    }
    assert "Membership store: postgresql+psycopg://" in err
    assert "password=***" in err
    assert '"bookmarks"' in out, "the target emitted STATE"
    assert_absent(
        out + err, [lytics_sandbox.api_token, braze_sandbox.api_key, PG_PASSWORD, PG_SSL_PASSWORD]
    )


# -- Braze CSV -> Lytics ---------------------------------------------------------------------


@pytest.fixture
def exports(tmp_path: Path) -> Iterator[dict]:
    """An SFTP root with one PGP-encrypted export; password and key logins."""
    root = tmp_path / "sftp"
    (root / "exports").mkdir(parents=True)
    plain = generate_export(tmp_path / "segment-vip-20261128.csv", 20, segment="VIP", seed=4)
    key = pgp_keys.make_gpg_key(tmp_path)
    pgp_keys.encrypt_file(plain, root / "exports" / "segment-vip-20261128.csv.pgp", armored=True)
    ssh_private, ssh_public = sftp_server.make_ssh_key("ed25519", passphrase=SSH_KEY_PASSPHRASE)
    server = sftp_server.start_sftp_server(
        root, {"braze": {"authorized_keys": [ssh_public], "password": SFTP_PASSWORD}}
    )
    try:
        yield {"server": server, "ssh_private": ssh_private, "pgp": key}
    finally:
        server.stop()
        pgp_keys.cleanup()


def csv_config(exports: dict, **sftp: str) -> dict:
    server = exports["server"]
    return {
        "paths": ["/exports/*"],
        "sftp": {
            "host": server.host,
            "port": server.port,
            "username": "braze",
            "known_hosts": server.host_key_line,
            **sftp,
        },
        "pgp_private_key": nl(exports["pgp"].armored_private_key),
        "pgp_passphrase": nl(exports["pgp"].passphrase),
    }


def csv_secrets(exports: dict) -> list[str]:
    """Distinctive text of every tap-braze-csv secret (a middle line for the keys)."""
    return [
        SFTP_PASSWORD,
        SSH_KEY_PASSPHRASE,
        exports["pgp"].passphrase,
        exports["ssh_private"].splitlines()[2],
        exports["pgp"].armored_private_key.splitlines()[3],
    ]


def test_braze_csv_to_lytics_secrets_with_trailing_newline(exports, lytics_sandbox, tmp_path: Path):
    tap_cfg = write(tmp_path, "tap", csv_config(exports, password=nl(SFTP_PASSWORD)))
    target_cfg = write(
        tmp_path,
        "target",
        {"api_url": lytics_sandbox.url, "api_token": nl(lytics_sandbox.api_token)},
    )
    tap_rc, target_rc, out, err = pipe(
        [str(BIN / "tap-braze-csv"), "--config", tap_cfg],
        [str(BIN / "target-lytics-users"), "--config", target_cfg],
    )
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    assert len(lytics_sandbox.collected("braze_users")) == 20
    assert_absent(out + err, [*csv_secrets(exports), lytics_sandbox.api_token])

    # The private-key login, key and its passphrase from files too; records and STATE on stdout.
    tap_cfg = write(
        tmp_path,
        "tap-key",
        csv_config(
            exports,
            private_key=nl(exports["ssh_private"]),
            private_key_passphrase=nl(SSH_KEY_PASSPHRASE),
        ),
    )
    proc = run([str(BIN / "tap-braze-csv"), "--config", tap_cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"type":"RECORD"') + proc.stdout.count('"type": "RECORD"') == 20
    assert_absent(proc.stdout + proc.stderr, csv_secrets(exports))


def test_braze_rest_export_key_with_trailing_newline(braze_sandbox, tmp_path: Path):
    for profile in sample_profiles(7, seed=5):
        attrs = dict(profile)
        braze_sandbox.add_user(attrs.pop("external_id"), **attrs)
    braze_sandbox.add_segment("seg-1")
    rest = {
        "api_key": nl(braze_sandbox.api_key),
        "rest_endpoint": braze_sandbox.url,
        "segment_ids": ["seg-1"],
        "poll_interval": 1,
        "wait_timeout": 20,
        "retry_backoff_base": 0,
    }
    proc = run(
        [str(BIN / "tap-braze-csv"), "--config", write(tmp_path, "rest", {"rest_export": rest})]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    users = [
        line
        for line in proc.stdout.splitlines()
        if '"stream":"braze_users"' in line.replace(" ", "")
    ]
    assert sum('"RECORD"' in line for line in users) == 7
    assert_absent(proc.stdout + proc.stderr, [braze_sandbox.api_key])

    # A wrong key from a file: refused by Braze, the message names the setting, not the key.
    rest["api_key"] = nl("wrong-rest-key-77")
    proc = run(
        [str(BIN / "tap-braze-csv"), "--config", write(tmp_path, "rest", {"rest_export": rest})]
    )
    assert proc.returncode != 0
    assert "rest_export.api_key" in proc.stderr
    assert_absent(proc.stdout + proc.stderr, ["wrong-rest-key-77", braze_sandbox.api_key])


# -- Wrong secrets and line breaks inside: refused, naming the setting, value never shown ------

MEMBER_INPUT = "\n".join(
    json.dumps(m)
    for m in [
        {
            "type": "SCHEMA",
            "stream": "audience_members",
            "schema": {
                "properties": {
                    "external_id": {"type": "string"},
                    "audience_slug": {"type": "string"},
                }
            },
            "key_properties": [],
        },
        {
            "type": "RECORD",
            "stream": "audience_members",
            "record": {"external_id": "u1", "audience_slug": "a"},
        },
        {
            "type": "SCHEMA",
            "stream": "braze_users",
            "schema": {"properties": {"braze_id": {"type": "string"}}},
            "key_properties": [],
        },
        {"type": "RECORD", "stream": "braze_users", "record": {"braze_id": "b1"}},
    ]
)


@pytest.mark.parametrize("inside", [False, True], ids=["wrong-secret", "line-break-inside"])
def test_http_plugins_refuse_bad_secrets_naming_the_setting(
    inside: bool, lytics_sandbox, braze_sandbox, tmp_path: Path
):
    secret = "wrong-file-secret-41\nsecond-line-k2" if inside else "wrong-file-secret-41"
    cases = {
        "tap-lytics-audience": (
            {"api_url": lytics_sandbox.url, "api_token": nl(secret)},
            "api_token",
        ),
        "target-braze-audience": (
            {
                "rest_endpoint": braze_sandbox.url,
                "api_key": nl(secret),
                "store_url": str(tmp_path / "store.sqlite"),
            },
            "api_key",
        ),
        "target-lytics-users": (
            {"api_url": lytics_sandbox.url, "api_token": nl(secret)},
            "api_token",
        ),
    }
    for plugin, (config, setting) in cases.items():
        proc = run([str(BIN / plugin), "--config", write(tmp_path, plugin, config)], MEMBER_INPUT)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, plugin
        assert f"`{setting}`" in output, (plugin, output[-2000:])
        assert_absent(output, secret.splitlines())
    assert braze_sandbox.users() == {}
    assert lytics_sandbox.collected("braze_users") == []


def test_rest_export_key_with_a_line_break_inside_is_refused_before_any_request(
    braze_sandbox, tmp_path: Path
):
    secret = "export-key-77\nsecond-line-q9"
    config = {
        "rest_export": {
            "api_key": nl(secret),
            "rest_endpoint": braze_sandbox.url,
            "segment_ids": ["seg-1"],
        }
    }
    proc = run([str(BIN / "tap-braze-csv"), "--config", write(tmp_path, "tap-braze-csv", config)])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "`rest_export.api_key` contains a line break" in output, output[-2000:]
    assert_absent(output, secret.splitlines())
    assert braze_sandbox.requests_snapshot() == []


# Secret settings the runs above give with a trailing newline, per plugin.
COVERED = {
    "tap-lytics-audience": {"api_token"},
    "target-braze-audience": {"api_key", "store_url"},
    "target-lytics-users": {"api_token"},
    "tap-braze-csv": {
        "rest_export.api_key",
        "sftp.password",
        "sftp.private_key",
        "sftp.private_key_passphrase",
        "pgp_private_key",
        "pgp_passphrase",
    },
}


def _secret_settings(schema: dict, prefix: str = "") -> set[str]:
    found = set()
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("secret"):
            found.add(prefix + name)
        found |= _secret_settings(prop, f"{prefix}{name}.")
    return found


# Cloud-storage credentials of tap-braze-csv: checked where the config is loaded (below),
# not by a run (that needs each cloud's emulator).
LOADED_ONLY = {
    "s3.aws_access_key_id",
    "s3.aws_secret_access_key",
    "s3.aws_session_token",
    "gcs.token",
    "azure.account_key",
    "azure.client_secret",
    "azure.connection_string",
    "azure.sas_token",
}


def test_cloud_storage_secrets_with_trailing_newline_are_stripped_at_load():
    from tap_braze_csv.tap import TapBrazeCsv

    config: dict = {"paths": ["/nonexistent/*.csv"]}
    for dotted in sorted(LOADED_ONLY):
        group, key = dotted.split(".")
        config.setdefault(group, {})[key] = nl(f"{key}-from-a-file-{len(dotted)}")
    tap = TapBrazeCsv(config=config)
    for dotted in LOADED_ONLY:
        group, key = dotted.split(".")
        assert tap.config[group][key] == f"{key}-from-a-file-{len(dotted)}", dotted


def test_every_secret_setting_is_covered_by_the_runs_above():
    """A new secret setting must be added to the runs above (and to COVERED)."""
    from tap_braze_csv.tap import TapBrazeCsv
    from tap_lytics_audience.tap import TapLyticsAudience
    from target_braze_audience.target import TargetBrazeAudience
    from target_lytics_users.target import TargetLyticsUsers

    plugins = [TapLyticsAudience, TargetBrazeAudience, TargetLyticsUsers, TapBrazeCsv]
    expected = {**COVERED, "tap-braze-csv": COVERED["tap-braze-csv"] | LOADED_ONLY}
    assert {p.name: _secret_settings(p.config_jsonschema) for p in plugins} == expected
