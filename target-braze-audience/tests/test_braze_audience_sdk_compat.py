"""The private SDK names target-braze-audience relies on still exist, and all are listed.

Every private Meltano SDK name the package uses lives in ``sdk_compat.py``. These tests
fail naming the symbol when an SDK upgrade removes a listed name or changes a listed
method's parameters, and when a module of the package uses a private SDK name (a private
module, an overridden or accessed private member) that ``sdk_compat.py`` does not list.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import re
import typing as t
from pathlib import Path

import pytest
import singer_sdk
from target_braze_audience import sdk_compat
from target_braze_audience.sinks import BrazeAudienceReader, BrazeAudienceSink
from target_braze_audience.target import TargetBrazeAudience

PACKAGE = Path(sdk_compat.__file__).parent
SDK_ROOT = Path(singer_sdk.__file__).parent
OURS = (TargetBrazeAudience, BrazeAudienceSink, BrazeAudienceReader)


def _symbol(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def _params(func: t.Any) -> tuple[str, ...]:
    sig = inspect.signature(func)
    return tuple(p for p in sig.parameters if p != "self")


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
        f"target-braze-audience was written for {params}"
    )


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
    for cls, names in sdk_compat.PRIVATE_ATTRIBUTES.items():
        for name in names:
            assert hasattr(instances[cls], name), (
                f"SDK private attribute {_symbol(cls, name)} no longer exists"
            )
    sink = instances[sdk_compat.Sink]
    assert sdk_compat.sink_validator(sink) is not None  # validate_records defaults on
    assert isinstance(sdk_compat.records_read(sink), int)
    assert sdk_compat.raw_config(instances[sdk_compat.Target])["api_key"] == "k"


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "sdk_compat.py")


@pytest.mark.parametrize("module", sorted(sdk_compat.PRIVATE_MODULES))
def test_listed_private_modules_still_provide_their_names(module: str) -> None:
    """An SDK upgrade that moves or renames a private module's names fails here."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"SDK private module {module} no longer imports: {exc}")
    for name in sdk_compat.PRIVATE_MODULES[module]:
        assert hasattr(mod, name), f"SDK private name {module}.{name} no longer exists"


def test_no_unlisted_private_sdk_module_imported() -> None:
    """`from singer_sdk.x._y import ...` only in sdk_compat.py, or in a generated common/
    copy (which cannot import sdk_compat) for names sdk_compat.PRIVATE_MODULES lists."""
    offenders = []
    for path in _package_modules():
        shared = path.parent.name == "common"
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[tuple[str, list[str]]] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [(node.module, [a.name for a in node.names])]
            elif isinstance(node, ast.Import):
                names = [(a.name, []) for a in node.names]
            for module, imported in names:
                if not module.startswith("singer_sdk") or not any(
                    part.startswith("_") for part in module.split(".")
                ):
                    continue
                listed = set(sdk_compat.PRIVATE_MODULES.get(module, ()))
                if not (shared and imported and set(imported) <= listed):
                    offenders.append(f"{path.name}:{node.lineno} imports {module} {imported}")
    assert not offenders, offenders


def _sdk_private_names() -> set[str]:
    """Private member names of the SDK classes the package subclasses or touches."""
    names: set[str] = set()
    for cls in OURS:
        for base in cls.__mro__:
            if base.__module__.startswith("singer_sdk"):
                names.update(n for n in vars(base) if n.startswith("_") and not n.startswith("__"))
                names.update(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(base)))
    return names


def test_every_private_sdk_member_used_is_listed() -> None:
    """Overrides and accesses of private SDK members are all in sdk_compat's tables."""
    listed = {
        n for table in (sdk_compat.OVERRIDDEN, sdk_compat.CALLED) for m in table.values() for n in m
    }
    sdk_private = _sdk_private_names()
    offenders = []
    for cls in OURS:
        for name in vars(cls):
            if name in sdk_private and name not in listed and name != "_abc_impl":
                offenders.append(f"{cls.__name__}.{name} overrides an SDK private member")
    for path in _package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            attr = node.attr if isinstance(node, ast.Attribute) else ""
            if attr in sdk_private and attr not in listed:
                offenders.append(f"{path.name}:{node.lineno} uses SDK private '{attr}'")
    assert not offenders, "not listed in sdk_compat.py: " + "; ".join(offenders)
