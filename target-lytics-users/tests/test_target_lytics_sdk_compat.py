"""The private SDK names target-lytics-users relies on still exist, and all are listed.

Every private Meltano SDK name the package uses is listed in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
function's or method's parameters, and when a module of the package uses a private SDK
name (a private module, an overridden or accessed private member) that is not listed.
The checks are the workspace's ``tests/sdk_compat_checks.py`` (the same for every plugin).
"""

from __future__ import annotations

import datetime as dt
import io
import typing as t

import pytest
import sdk_compat_checks as checks
from target_lytics_users import sdk_compat
from target_lytics_users.serialize import LyticsUsersReader
from target_lytics_users.sinks import LyticsSink
from target_lytics_users.target import TargetLyticsUsers

PLUGIN = "target-lytics-users"
OURS = (TargetLyticsUsers, LyticsSink, LyticsUsersReader)


@checks.each_listed_method(sdk_compat)
def test_listed_private_methods_exist_with_their_parameters(
    cls: type, name: str, params: tuple[str, ...]
) -> None:
    """An SDK upgrade that drops or re-signs a private method fails here, naming it."""
    problem = checks.method_problem(cls, name, params, PLUGIN)
    assert problem is None, problem


def test_listed_private_functions_and_modules_exist_with_their_parameters() -> None:
    """An SDK upgrade that drops or re-signs a private helper function fails here, naming it."""
    assert sdk_compat.PRIVATE_FUNCTIONS
    problems = checks.function_problems(sdk_compat, PLUGIN) + checks.module_problems(sdk_compat)
    assert not problems, problems


def test_the_sdk_date_parsers_still_parse_and_refuse() -> None:
    """The sink relies on the SDK's parsers accepting ISO 8601 and raising ValueError."""
    assert sdk_compat.date_fromisoformat("2024-02-29") == dt.date(2024, 2, 29)
    assert sdk_compat.time_fromisoformat("12:30:00") == dt.time(12, 30)
    parsed = sdk_compat.datetime_fromisoformat("2024-02-29T12:30:00+00:00")
    assert parsed == dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.timezone.utc)
    for parse in (
        sdk_compat.date_fromisoformat,
        sdk_compat.time_fromisoformat,
        sdk_compat.datetime_fromisoformat,
    ):
        with pytest.raises(ValueError):  # noqa: PT011 (the SDK's contract is a bare ValueError)
            parse("not a date")


def _sdk_instances() -> dict[type, t.Any]:
    """A real target after a SCHEMA message (nothing is sent), and its sink."""
    target = TargetLyticsUsers(
        config={"api_token": "t", "api_url": "http://127.0.0.1:9"}, validate_config=True
    )
    schema = (
        '{"type":"SCHEMA","stream":"s","schema":{"type":"object","properties":'
        '{"id":{"type":"string"}}},"key_properties":["id"]}\n'
    )
    target.listen(file_input=io.StringIO(schema))
    return {
        sdk_compat.Sink: target.get_sink("s"),
        sdk_compat.Target: target,
        sdk_compat.PluginBase: target,
    }


def test_listed_private_attributes_exist_on_real_instances() -> None:
    """An SDK upgrade that renames a private attribute the package touches fails here."""
    instances = _sdk_instances()
    problems = checks.attribute_problems(sdk_compat, instances)
    assert not problems, problems
    assert isinstance(instances[sdk_compat.Sink]._validator, object)


def test_no_private_sdk_module_imported_outside_sdk_compat() -> None:
    """`from singer_sdk.x._y import ...` belongs in sdk_compat.py only.

    Except the generated copies of the repository's common/ modules (one original for every
    plugin): what they import must be listed in sdk_compat.py, and is checked there.
    """
    problems = checks.private_import_problems(sdk_compat)
    assert not problems, problems


def test_every_private_sdk_member_used_is_listed() -> None:
    """Overrides and accesses of private SDK members are all in sdk_compat's tables."""
    problems = checks.unlisted_uses(sdk_compat, OURS)
    assert not problems, "not listed in sdk_compat.py: " + "; ".join(problems)


def test_an_unlisted_private_member_is_named() -> None:
    """The completeness check can fail: without one listed name it names where it is used."""
    problems = checks.unlisted_uses(
        sdk_compat, OURS, checks.listed_names(sdk_compat) - {"_validator"}
    )
    assert any("sinks.py" in p and "'_validator'" in p for p in problems), problems
