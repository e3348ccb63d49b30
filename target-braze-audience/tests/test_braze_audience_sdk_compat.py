"""The private SDK names target-braze-audience relies on still exist, and all are listed.

Every private Meltano SDK name the package uses lives in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
method's parameters, and when a module of the package uses a private SDK name (a private
module, an overridden or accessed private member) that ``sdk_compat.py`` does not list.
The checks are the workspace's ``tests/sdk_compat_checks.py`` (the same for every plugin).
"""

from __future__ import annotations

import io
import typing as t
from pathlib import Path

import sdk_compat_checks as checks
from target_braze_audience import sdk_compat
from target_braze_audience.sinks import BrazeAudienceReader, BrazeAudienceSink
from target_braze_audience.target import TargetBrazeAudience

PLUGIN = "target-braze-audience"
OURS = (TargetBrazeAudience, BrazeAudienceSink, BrazeAudienceReader)


@checks.each_listed_method(sdk_compat)
def test_listed_private_methods_exist_with_their_parameters(
    cls: type, name: str, params: tuple[str, ...]
) -> None:
    """An SDK upgrade that drops or re-signs a private method fails here, naming it."""
    problem = checks.method_problem(cls, name, params, PLUGIN)
    assert problem is None, problem


def _sdk_instances(tmp_path: Path) -> dict[type, t.Any]:
    """A real target after a SCHEMA message (dry run: no client), and its sink."""
    target = TargetBrazeAudience(
        config={
            "api_key": "k",
            "rest_endpoint": "http://127.0.0.1:9",
            "store_url": str(tmp_path / "store.sqlite"),
            "dry_run": True,
        },
        validate_config=True,
    )
    schema = '{"type":"SCHEMA","stream":"s","schema":{"type":"object","properties":{}},"key_properties":[]}\n'
    target.listen(file_input=io.StringIO(schema))
    sink = target.get_sink("s")
    return {sdk_compat.Sink: sink, sdk_compat.Target: target, sdk_compat.PluginBase: target}


def test_listed_private_attributes_exist_on_real_instances(tmp_path: Path) -> None:
    """An SDK upgrade that renames a private attribute the package touches fails here."""
    instances = _sdk_instances(tmp_path)
    problems = checks.attribute_problems(sdk_compat, instances)
    assert not problems, problems
    sink = instances[sdk_compat.Sink]
    assert sdk_compat.sink_validator(sink) is not None  # validate_records defaults on
    assert isinstance(sdk_compat.records_read(sink), int)
    assert sdk_compat.raw_config(instances[sdk_compat.Target])["api_key"] == "k"


def test_listed_private_modules_still_provide_their_names() -> None:
    """An SDK upgrade that moves or renames a private module's names fails here."""
    assert sdk_compat.PRIVATE_MODULES
    problems = checks.module_problems(sdk_compat)
    assert not problems, problems


def test_no_unlisted_private_sdk_module_imported() -> None:
    """`from singer_sdk.x._y import ...` only in sdk_compat.py, or in a generated common/
    copy (which cannot import sdk_compat) for names sdk_compat.PRIVATE_MODULES lists."""
    problems = checks.private_import_problems(sdk_compat)
    assert not problems, problems


def test_every_private_sdk_member_used_is_listed() -> None:
    """Overrides and accesses of private SDK members are all in sdk_compat's tables."""
    problems = checks.unlisted_uses(sdk_compat, OURS)
    assert not problems, "not listed in sdk_compat.py: " + "; ".join(problems)


def test_an_unlisted_private_member_is_named() -> None:
    """The completeness check can fail: without one listed name it names where it is used."""
    listed = checks.listed_names(sdk_compat) - {"_process_record_message"}
    problems = checks.unlisted_uses(sdk_compat, OURS, listed)
    assert (
        "TargetBrazeAudience._process_record_message overrides an SDK private member" in problems
    ), problems
