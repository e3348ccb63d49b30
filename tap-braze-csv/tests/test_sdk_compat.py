"""The private singer-sdk names tap-braze-csv uses (tap_braze_csv/sdk_compat.py) still exist.

Each test names the symbol that broke: after an SDK upgrade, a failure here says which private
name moved or changed before any sync misbehaves. The last test keeps the list complete: a
private SDK name used anywhere else in the package fails, naming the file and line.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.plugin_base import PluginBase
from tap_braze_csv import sdk_compat
from tap_braze_csv.tap import TapBrazeCsv

PACKAGE = Path(sdk_compat.__file__).parent


@pytest.mark.parametrize(
    ("owner", "name"),
    list(sdk_compat.PRIVATE_METHODS),
    ids=[f"{c.__name__}.{n}" for c, n in sdk_compat.PRIVATE_METHODS],
)
def test_private_sdk_method_exists_with_its_parameters(owner: type, name: str) -> None:
    symbol = f"singer_sdk {owner.__name__}.{name}"
    method = getattr(owner, name, None)
    assert callable(method), f"{symbol} is gone (used via tap_braze_csv/sdk_compat.py)"
    params = tuple(inspect.signature(method).parameters)
    expected = sdk_compat.PRIVATE_METHODS[(owner, name)]
    assert params == expected, f"{symbol} now takes {params}, tap-braze-csv expects {expected}"


def _sdk_instances(tmp_path: Path) -> dict[type, Any]:
    (tmp_path / "a.csv").write_text("external_id\nu1\n")
    tap = TapBrazeCsv(config={"paths": [str(tmp_path / "a.csv")]}, validate_config=True)
    return {PluginBase: tap, Tap: tap, Stream: tap.streams["braze_users"]}


def test_private_sdk_attributes_are_set(tmp_path: Path) -> None:
    instances = _sdk_instances(tmp_path)
    for owner, names in sdk_compat.PRIVATE_ATTRIBUTES.items():
        for name in names:
            assert hasattr(instances[owner], name), (
                f"singer_sdk {owner.__name__} instances no longer have {name} "
                "(used via tap_braze_csv/sdk_compat.py)"
            )


def test_compat_wrappers_reach_the_sdk(tmp_path: Path) -> None:
    """The wrappers return what the SDK holds (so a renamed attribute cannot go unnoticed)."""
    instances = _sdk_instances(tmp_path)
    tap, stream = instances[Tap], instances[Stream]
    assert sdk_compat.stream_tap(stream) is tap
    assert sdk_compat.stream_version(stream) is None  # set only once a sync starts
    config = sdk_compat.raw_config(tap)
    assert config["paths"] == tap.config["paths"]
    sdk_compat.set_raw_config(tap, {**config, "delimiter": ";"})
    assert tap.config["delimiter"] == ";"


def _sdk_private_names() -> set[str]:
    """Private names of the SDK's Tap/Stream classes and of plain SDK instances."""

    class PlainStream(Stream):
        name = "plain"
        schema = {"properties": {}}

        def get_records(self, context: Any) -> Any:
            return iter(())

    class PlainTap(Tap):
        name = "plain"
        config_jsonschema = {"properties": {}}

        def discover_streams(self) -> list[Stream]:
            return [PlainStream(self)]

    tap = PlainTap(config={}, validate_config=False)
    names = {*dir(Tap), *dir(Stream), *vars(tap), *vars(tap.streams["plain"])}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_private_sdk_names_are_used_only_in_sdk_compat() -> None:
    private = _sdk_private_names()
    declared = {name for _, name in sdk_compat.PRIVATE_METHODS}
    declared |= {n for names in sdk_compat.PRIVATE_ATTRIBUTES.values() for n in names}
    assert declared <= private, f"not private SDK names any more: {declared - private}"
    allowed_override = re.compile(r"def (\w+)\(|super\(\)\.(\w+)\(")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "sdk_compat.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            overrides = {m for pair in allowed_override.findall(line) for m in pair if m}
            # attribute uses, and methods (indented defs: a module function overrides nothing)
            for name in re.findall(r"\.(_\w+)|^\s+def (_\w+)\(", line):
                used = name[0] or name[1]
                if used in private and not (used in overrides and used in sdk_compat.OVERRIDDEN):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {used}")
    assert not found, "private singer-sdk names used outside sdk_compat.py:\n" + "\n".join(found)
