"""The workspace installs the four plugin executables and each answers --about."""

import json
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
