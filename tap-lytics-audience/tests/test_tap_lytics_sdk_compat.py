"""The private SDK names tap-lytics-audience relies on still exist, and all are listed.

Every private Meltano SDK name the package uses is listed in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
method's parameters, and when a module of the package uses a private SDK name (a private
module, an overridden or accessed private member) that is not listed.
The checks are the workspace's ``tests/sdk_compat_checks.py`` (the same for every plugin).
"""

from __future__ import annotations

import sdk_compat_checks as checks
from tap_lytics_audience import client, sdk_compat, streams
from tap_lytics_audience.common import orjson_writer
from tap_lytics_audience.tap import TapLyticsAudience

PLUGIN = "tap-lytics-audience"
OURS = [TapLyticsAudience, *checks.sdk_classes_in(streams, client, orjson_writer)]


@checks.each_listed_method(sdk_compat)
def test_listed_private_methods_exist_with_their_parameters(
    cls: type, name: str, params: tuple[str, ...]
) -> None:
    """An SDK upgrade that drops or re-signs a private method fails here, naming it."""
    problem = checks.method_problem(cls, name, params, PLUGIN)
    assert problem is None, problem


def test_listed_private_attributes_exist_on_real_instances() -> None:
    """An SDK upgrade that renames a private attribute the package touches fails here."""
    tap = TapLyticsAudience(
        config={"api_token": "t", "api_url": "http://127.0.0.1:9", "audiences": ["a"]},
        validate_config=True,
    )
    stream = tap.streams[streams.AudienceMembersStream.name]
    problems = checks.attribute_problems(
        sdk_compat, {sdk_compat.PluginBase: tap, sdk_compat.Stream: stream}
    )
    assert not problems, problems
    assert stream._tap is tap


def test_no_private_sdk_module_imported() -> None:
    """The package imports no private SDK module (`singer_sdk.x._y`)."""
    problems = checks.private_import_problems(sdk_compat)
    assert not problems, problems


def test_every_private_sdk_member_used_is_listed() -> None:
    """Overrides and accesses of private SDK members are all in sdk_compat's tables."""
    problems = checks.unlisted_uses(sdk_compat, OURS)
    assert not problems, "not listed in sdk_compat.py: " + "; ".join(problems)


def test_an_unlisted_private_member_is_named() -> None:
    """The completeness check can fail: without one listed name it names where it is used."""
    listed = checks.listed_names(sdk_compat) - {"_prepare_request"}
    problems = checks.unlisted_uses(sdk_compat, OURS, listed)
    assert any("streams.py" in p and "'_prepare_request'" in p for p in problems), problems
