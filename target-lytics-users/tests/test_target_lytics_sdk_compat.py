"""The private SDK names target-lytics-users relies on still exist, and all are listed.

Every private Meltano SDK name the package uses is listed in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
function's or method's parameters, and when a module of the package uses a private SDK
name (a private module, an overridden or accessed private member) that is not listed.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import inspect
import io
import re
import typing as t
from pathlib import Path

import pytest
from target_lytics_users import sdk_compat
from target_lytics_users.serialize import LyticsUsersReader
from target_lytics_users.sinks import LyticsSink
from target_lytics_users.target import TargetLyticsUsers

PACKAGE = Path(sdk_compat.__file__).parent
OURS = (TargetLyticsUsers, LyticsSink, LyticsUsersReader)


def _symbol(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def _params(func: t.Any) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(func).parameters if p != "self")


def _function(path: str) -> t.Any:
    module, name = path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


@pytest.mark.parametrize(("path", "params"), sdk_compat.PRIVATE_FUNCTIONS.items())
def test_listed_private_functions_exist_with_their_parameters(
    path: str, params: tuple[str, ...] | None
) -> None:
    """An SDK upgrade that drops or re-signs a private helper function fails here, naming it."""
    func = _function(path)
    assert func is not None, f"SDK private function {path} no longer exists"
    if params is not None:
        assert _params(func) == params, (
            f"SDK private function {path} now takes {_params(func)}, "
            f"target-lytics-users was written for {params}"
        )


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
        f"target-lytics-users was written for {params}"
    )


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
    missing = [
        _symbol(cls, name)
        for cls, names in sdk_compat.PRIVATE_ATTRIBUTES.items()
        for name in names
        if not hasattr(instances[cls], name)
    ]
    assert not missing, f"SDK private attributes no longer exist: {missing}"
    assert isinstance(instances[sdk_compat.Sink]._validator, object)


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "sdk_compat.py")


def _private_sdk_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [
            (node.lineno, name)
            for name in names
            if name.startswith("singer_sdk") and any(p.startswith("_") for p in name.split("."))
        ]
    return found


def test_no_private_sdk_module_imported_outside_sdk_compat() -> None:
    """`from singer_sdk.x._y import ...` belongs in sdk_compat.py only.

    Except the generated copies of the repository's common/ modules (one original for every
    plugin): what they import must be listed in sdk_compat.py, and is checked there.
    """
    listed = {path.rsplit(".", 1)[0] for path in sdk_compat.PRIVATE_FUNCTIONS}
    listed.add("singer_sdk.helpers._batch")  # common/batch_files.py
    offenders = []
    for path in _package_modules():
        for lineno, name in _private_sdk_imports(path):
            if path.parent.name != "common" or name not in listed:
                offenders.append(f"{path.relative_to(PACKAGE)}:{lineno} imports {name}")
    assert not offenders, offenders


def _sdk_private_names() -> set[str]:
    """Private member names of the SDK classes the package subclasses."""
    names: set[str] = set()
    for cls in OURS:
        for base in cls.__mro__:
            if base.__module__.startswith("singer_sdk"):
                names.update(n for n in vars(base) if n.startswith("_") and not n.startswith("__"))
                names.update(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
    return names


def _listed() -> set[str]:
    methods = {
        n for table in (sdk_compat.OVERRIDDEN, sdk_compat.CALLED) for m in table.values() for n in m
    }
    return methods | {n for names in sdk_compat.PRIVATE_ATTRIBUTES.values() for n in names}


def _unlisted_uses(listed: set[str]) -> list[str]:
    sdk_private = _sdk_private_names()
    offenders = [
        f"{cls.__name__}.{name} overrides an SDK private member"
        for cls in OURS
        for name in vars(cls)
        if name in sdk_private and name not in listed and name != "_abc_impl"
    ]
    for path in _package_modules():
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
    offenders = _unlisted_uses(_listed() - {"_validator"})
    assert any("sinks.py" in o and "'_validator'" in o for o in offenders), offenders
