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


def _env_name(plugin: str, setting: str) -> str:
    return f"{plugin}_{setting}".upper().replace("-", "_").replace(".", "_")


def test_env_example_lists_every_variable_the_prod_environment_reads() -> None:
    """`.env.example` names each `$VAR` of the prod environment and each secret/required setting."""
    import re

    import yaml

    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    (prod,) = [e for e in project["environments"] if e["name"] == "prod"]
    referenced: set[str] = set()
    set_in_prod: set[str] = set()
    for plugins in prod["config"]["plugins"].values():
        for plugin in plugins:
            for setting, value in (plugin.get("config") or {}).items():
                set_in_prod.add(_env_name(plugin["name"], setting))
                referenced |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", str(value)))
    assert referenced, "the prod environment reads its URLs from the environment"
    needed = set(referenced)
    plugins = {p["name"]: p for kind in ("extractors", "loaders") for p in project["plugins"][kind]}
    for plugin in plugins.values():
        # an inherited plugin (tap-braze-rest-export) reads its parent's settings under its name
        base = plugins[plugin.get("inherit_from", plugin["name"])]
        configured = set(plugin.get("config") or {}) if plugin is not base else set()
        # settings_group_validation lists alternatives: the first one meltano.yml leaves open
        groups = [g for g in base.get("settings_group_validation", []) if not configured & set(g)]
        required = set(groups[0]) if groups else set()
        for setting in base["settings"]:
            name = _env_name(plugin["name"], setting["name"])
            if (setting.get("sensitive") or setting["name"] in required) and (
                name not in set_in_prod
            ):
                needed.add(name)
    assert sorted(needed - listed) == []


def test_no_setting_is_declared_decimal() -> None:
    """Meltano 4.4 cannot write a `kind: decimal` setting given as an env var (Decimal is not
    JSON serializable): number settings are `kind: string`, parsed by each plugin."""
    import yaml

    files = [ROOT / "meltano.yml", *sorted((ROOT / "hub").rglob("*.yml"))]
    numbers = 0
    for path in files:
        text = path.read_text()
        assert "kind: decimal" not in text, path
        numbers += text.count("name: max_removal_fraction")
    assert numbers >= 2  # meltano.yml and hub/ both declare it
    plugins = yaml.safe_load((ROOT / "meltano.yml").read_text())["plugins"]["loaders"]
    braze = next(p for p in plugins if p["name"] == "target-braze-audience")
    setting = next(s for s in braze["settings"] if s["name"] == "max_removal_fraction")
    assert setting["kind"] == "string"
