"""The private SDK names tap-lytics-audience relies on still exist, and all are listed.

Every private Meltano SDK name the package uses is listed in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
method's parameters, and when a module of the package uses a private SDK name (a private
module, an overridden or accessed private member) that is not listed.
"""

from __future__ import annotations

import ast
import inspect
import re
import typing as t
from pathlib import Path

import pytest
from tap_lytics_audience import client, sdk_compat, streams
from tap_lytics_audience.common import orjson_writer
from tap_lytics_audience.tap import TapLyticsAudience

PACKAGE = Path(sdk_compat.__file__).parent


def _ours() -> list[type]:
    """The package's classes that extend an SDK class."""
    found: list[type] = [TapLyticsAudience]
    for module in (streams, client, orjson_writer):
        found += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and any(b.__module__.startswith("singer_sdk") for b in obj.__mro__[1:])
        ]
    return found


def _symbol(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def _params(func: t.Any) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(func).parameters if p != "self")


LISTED_METHODS = [
    (cls, name, params)
    for table in (sdk_compat.OVERRIDDEN, sdk_compat.CALLED)
    for cls, methods in table.items()
    for name, params in methods.items()
]


@pytest.mark.parametrize(
    ("cls", "name", "params"),
    LISTED_METHODS,
    ids=[_symbol(c, n) for c, n, _p in LISTED_METHODS],
)
def test_listed_private_methods_exist_with_their_parameters(
    cls: type, name: str, params: tuple[str, ...]
) -> None:
    """An SDK upgrade that drops or re-signs a private method fails here, naming it."""
    func = getattr(cls, name, None)
    assert func is not None, f"SDK private method {_symbol(cls, name)} no longer exists"
    assert _params(func) == params, (
        f"SDK private method {_symbol(cls, name)} now takes {_params(func)}, "
        f"tap-lytics-audience was written for {params}"
    )


def test_listed_private_attributes_exist_on_real_instances() -> None:
    """An SDK upgrade that renames a private attribute the package touches fails here."""
    tap = TapLyticsAudience(
        config={"api_token": "t", "api_url": "http://127.0.0.1:9", "audiences": ["a"]},
        validate_config=True,
    )
    stream = tap.streams[streams.AudienceMembersStream.name]
    instances = {sdk_compat.PluginBase: tap, sdk_compat.Stream: stream}
    missing = [
        _symbol(cls, name)
        for cls, names in sdk_compat.PRIVATE_ATTRIBUTES.items()
        for name in names
        if not hasattr(instances[cls], name)
    ]
    assert not missing, f"SDK private attributes no longer exist: {missing}"
    assert stream._tap is tap


def test_no_private_sdk_module_imported() -> None:
    """The package imports no private SDK module (`singer_sdk.x._y`)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [
                f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}"
                for name in names
                if name.startswith("singer_sdk") and any(p.startswith("_") for p in name.split("."))
            ]
    assert not offenders, offenders


def _sdk_private_names() -> set[str]:
    """Private member names of the SDK classes the package subclasses."""
    names: set[str] = set()
    for cls in _ours():
        for base in cls.__mro__:
            if base.__module__.startswith("singer_sdk"):
                names.update(n for n in vars(base) if n.startswith("_") and not n.startswith("__"))
                names.update(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
    return names


def _listed() -> set[str]:
    tables = (sdk_compat.OVERRIDDEN, sdk_compat.CALLED)
    methods = {n for table in tables for m in table.values() for n in m}
    return methods | {n for names in sdk_compat.PRIVATE_ATTRIBUTES.values() for n in names}


def _unlisted_uses(listed: set[str]) -> list[str]:
    sdk_private = _sdk_private_names()
    offenders = [
        f"{cls.__name__}.{name} overrides an SDK private member"
        for cls in _ours()
        for name in vars(cls)
        if name in sdk_private and name not in listed and name != "_abc_impl"
    ]
    for path in sorted(p for p in PACKAGE.rglob("*.py") if p.name != "sdk_compat.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            attr = node.attr if isinstance(node, ast.Attribute) else ""
            if attr in sdk_private and attr not in listed:
                offenders.append(f"{path.name}:{node.lineno} uses SDK private '{attr}'")
    return offenders


def test_every_private_sdk_member_used_is_listed() -> None:
    """Overrides and accesses of private SDK members are all in sdk_compat's tables."""
    offenders = _unlisted_uses(_listed())
    assert not offenders, "not listed in sdk_compat.py: " + "; ".join(offenders)


def test_an_unlisted_private_member_is_named() -> None:
    """The completeness check can fail: without one listed name it names where it is used."""
    offenders = _unlisted_uses(_listed() - {"_prepare_request"})
    assert any("streams.py" in o and "'_prepare_request'" in o for o in offenders), offenders
