"""Regenerate the plugin settings of meltano.yml from each plugin's `--about --format=json`.

    uv run python scripts/sync_meltano_yml.py          # rewrite meltano.yml (and hub/'s definitions)
    uv run python scripts/sync_meltano_yml.py --check  # exit 1 when meltano.yml is out of date

The plugins' config schemas are the single source of truth: names, kinds, defaults, descriptions
and `sensitive` flags all come from them, so meltano.yml cannot drift from the code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MELTANO_YML = ROOT / "meltano.yml"
PLUGINS: dict[str, dict[str, Any]] = {
    "tap-lytics-audience": {"type": "extractors", "groups": [["api_token"]]},
    # The s3 extra: the project's jobs read Braze's S3 exports (gcs/azure: add them here).
    "tap-braze-csv": {
        "type": "extractors",
        "extras": "[s3]",
        "groups": [
            ["paths"],
            ["rest_export.api_key", "rest_export.rest_endpoint", "rest_export.segment_ids"],
        ],
    },
    # The PostgreSQL store driver is an optional extra; Meltano projects install it.
    "target-braze-audience": {
        "type": "loaders",
        "groups": [["api_key", "rest_endpoint"]],
        "extras": "[postgres]",
    },
    "target-lytics-users": {"type": "loaders", "groups": [["api_token"]]},
}
KINDS = {
    "string": "string",
    "integer": "integer",
    # Not "decimal": Meltano (4.4) casts a decimal setting's env var to Decimal and then
    # cannot write it to the plugin's JSON config (TypeError). As a string it reaches the
    # plugin as e.g. "0.7", which each plugin parses at config load (config_numbers.py).
    "number": "string",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}
ACRONYMS = {
    "api": "API",
    "url": "URL",
    "id": "ID",
    "sftp": "SFTP",
    "pgp": "PGP",
    "ssh": "SSH",
    "s3": "S3",
    "gcs": "GCS",
    "aws": "AWS",
    "sas": "SAS",
}


def _type(schema: dict) -> str:
    types = schema.get("type", "string")
    if isinstance(types, str):
        types = [types]
    main = [t for t in types if t != "null"]
    if schema.get("enum") and main == ["string"]:
        return "options"
    return KINDS.get(main[0] if main else "string", "string")


def _label(name: str) -> str:
    return " ".join(ACRONYMS.get(w, w.capitalize()) for w in name.replace(".", "_").split("_"))


def _settings(properties: dict, prefix: str = "") -> list[dict]:
    out: list[dict] = []
    for name, schema in properties.items():
        full = f"{prefix}{name}"
        nested = schema.get("properties")
        if (
            _type(schema) == "object"
            and nested
            and full in {"sftp", "rest_export", "s3", "gcs", "azure"}
        ):
            out += _settings(nested, prefix=f"{full}.")
            continue
        setting: dict[str, Any] = {
            "name": full,
            "kind": _type(schema),
            "label": schema.get("title") or _label(full),
        }
        setting["description"] = (
            schema.get("description") or schema.get("title") or _label(full)
        ).strip()
        if "default" in schema and schema["default"] is not None and not prefix:
            setting["value"] = schema["default"]
        if setting["kind"] == "options":
            setting["options"] = [{"label": str(v), "value": v} for v in schema["enum"]]
        if schema.get("secret"):
            setting["sensitive"] = True
        out.append(setting)
    return out


def about(name: str) -> dict:
    """The plugin's `--about --format=json` (run from this environment's bin/)."""
    return json.loads(
        subprocess.run(
            [str(BIN / name), "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def plugin_block(name: str) -> dict:
    info = about(name)
    return {
        "name": name,
        "namespace": name.replace("-", "_"),
        "pip_url": f"-e ./{name}{PLUGINS[name].get('extras', '')}",
        "executable": name,
        "capabilities": info["capabilities"],
        "settings_group_validation": PLUGINS[name]["groups"],
        "settings": _settings(info["settings"]["properties"]),
    }


def render() -> str:
    current = yaml.safe_load(MELTANO_YML.read_text())
    plugins: dict[str, list] = {"extractors": [], "loaders": []}
    for name, spec in PLUGINS.items():
        plugins[spec["type"]].append(plugin_block(name))
    # Plugins inheriting from ours (e.g. tap-braze-rest-export) are hand-written: keep them.
    for kind, entries in (current.get("plugins") or {}).items():
        plugins.setdefault(kind, []).extend(e for e in entries or [] if "inherit_from" in e)
    current["plugins"] = plugins
    header = []
    for line in MELTANO_YML.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    body = yaml.safe_dump(current, sort_keys=False, width=110, allow_unicode=True)
    return "\n".join(header) + ("\n" if header else "") + body


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if MELTANO_YML.read_text() != text:
            print(
                "meltano.yml is out of date: run `uv run python scripts/sync_meltano_yml.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    MELTANO_YML.write_text(text)
    # hub/'s Meltano Hub-style definitions come from the same --about: regenerate them too.
    import sync_hub_definitions

    return sync_hub_definitions.main()


if __name__ == "__main__":
    raise SystemExit(main())
