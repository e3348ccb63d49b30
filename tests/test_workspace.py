"""The workspace installs the four plugin executables and each answers --about."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PLUGINS = ["tap-lytics-audience", "tap-braze-csv", "target-braze-audience", "target-lytics-users"]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_about_json_lists_settings(plugin: str) -> None:
    out = subprocess.run(
        [str(BIN / plugin), "--about", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    about = json.loads(out)
    assert about["name"] == plugin
    assert about["settings"]["properties"], "every plugin documents its settings"


ROOT = Path(__file__).resolve().parent.parent


def test_meltano_yml_in_sync_with_plugin_settings() -> None:
    """meltano.yml's settings are generated from each plugin's --about: they cannot drift."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_meltano_yml.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("plugin", PLUGINS)
def test_meltano_config_lists_every_setting(plugin: str) -> None:
    about = json.loads(
        subprocess.run(
            [str(BIN / plugin), "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    proc = subprocess.run(
        [str(BIN / "meltano"), "config", "list", plugin, "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.replace(" (required by group 1)", "").replace(" (required by group 2)", "")
    for name, schema in about["settings"]["properties"].items():
        if name in ("sftp", "rest_export", "s3", "gcs", "azure"):
            for sub in schema["properties"]:
                assert f"{name}.{sub} [env:" in listed
        else:
            assert f"{name} [env:" in listed, name
