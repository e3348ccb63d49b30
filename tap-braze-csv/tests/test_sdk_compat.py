"""The private singer-sdk names tap-braze-csv uses (tap_braze_csv/sdk_compat.py) still exist.

Each test names the symbol that broke: after an SDK upgrade, a failure here says which private
name moved or changed before any sync misbehaves. The last tests keep the list complete: a
private SDK name used anywhere else in the package fails, naming the file and line.
The checks are the workspace's ``tests/sdk_compat_checks.py`` (the same for every plugin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sdk_compat_checks as checks
from singer_sdk import Stream, Tap
from singer_sdk.plugin_base import PluginBase
from tap_braze_csv import engagement, sdk_compat, streams, tap
from tap_braze_csv.tap import TapBrazeCsv

PLUGIN = "tap-braze-csv"
OURS = checks.sdk_classes_in(tap, streams, engagement)


@checks.each_listed_method(sdk_compat)
def test_private_sdk_method_exists_with_its_parameters(
    cls: type, name: str, params: tuple[str, ...]
) -> None:
    problem = checks.method_problem(cls, name, params, PLUGIN)
    assert problem is None, problem


def _sdk_instances(tmp_path: Path) -> dict[type, Any]:
    (tmp_path / "a.csv").write_text("external_id\nu1\n")
    tap = TapBrazeCsv(config={"paths": [str(tmp_path / "a.csv")]}, validate_config=True)
    return {PluginBase: tap, Tap: tap, Stream: tap.streams["braze_users"]}


def test_private_sdk_attributes_are_set(tmp_path: Path) -> None:
    problems = checks.attribute_problems(sdk_compat, _sdk_instances(tmp_path))
    assert not problems, problems


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


def test_no_private_sdk_module_imported() -> None:
    problems = checks.private_import_problems(sdk_compat)
    assert not problems, problems


def test_private_sdk_names_are_used_only_in_sdk_compat() -> None:
    assert {TapBrazeCsv, streams.BrazeUsersStream} <= set(OURS)
    problems = checks.unlisted_uses(sdk_compat, OURS)
    assert not problems, "private singer-sdk names used outside sdk_compat.py:\n" + "\n".join(
        problems
    )


def test_an_unlisted_private_member_is_named() -> None:
    """The completeness check can fail: without one listed name it names where it is used."""
    listed = checks.listed_names(sdk_compat) - {"_sync_records"}
    problems = checks.unlisted_uses(sdk_compat, OURS, listed)
    assert "BrazeUsersStream._sync_records overrides an SDK private member" in problems, problems
