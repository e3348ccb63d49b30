"""The settings every plugin shares mean the same everywhere, so `--about` describes them in the
same words (top level, or inside tap-braze-csv's `rest_export` object)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PLUGINS = ["tap-lytics-audience", "tap-braze-csv", "target-braze-audience", "target-lytics-users"]
SHARED = [
    "request_timeout",
    "max_retries",
    "max_rate_limit_retries",
    "retry_backoff_base",
    "retry_backoff_max",
]


def _settings(plugin: str) -> dict[str, dict]:
    about = subprocess.run(
        [str(BIN / plugin), "--about", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    props = json.loads(about.stdout)["settings"]["properties"]
    return props["rest_export"]["properties"] if plugin == "tap-braze-csv" else props


@pytest.fixture(scope="module")
def settings() -> dict[str, dict[str, dict]]:
    return {plugin: _settings(plugin) for plugin in PLUGINS}


@pytest.mark.parametrize("name", SHARED)
def test_shared_setting_described_alike_in_every_plugin(name: str, settings) -> None:
    descriptions = {plugin: settings[plugin][name]["description"] for plugin in PLUGINS}
    assert len(set(descriptions.values())) == 1, descriptions
