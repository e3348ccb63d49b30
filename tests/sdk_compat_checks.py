"""The checks of a plugin's ``sdk_compat.py``, written once for the four plugins' tests.

Each plugin lists every private singer-sdk name it uses in its ``sdk_compat.py``:

- ``OVERRIDDEN`` / ``CALLED``: ``{SDK class: {method: parameters after self}}``;
- ``PRIVATE_ATTRIBUTES``: ``{SDK class: attribute names}``;
- ``PRIVATE_MODULES`` (when a generated ``common/`` copy imports one, since a copy cannot
  import ``sdk_compat``): ``{private SDK module: names}``; ``PRIVATE_FUNCTIONS`` (functions of
  private SDK modules): ``{"module.name": parameters, or None for a builtin}``.

Each function returns the problems it finds (empty when none), each naming the SDK symbol,
or the file and line of an unlisted use, so a plugin's test is a few lines asserting none.
A test helper, not a ``common/`` module: ``common/`` modules are copied into the plugins'
wheels, and this is only needed by their tests (all run from the workspace, where ``tests/``
is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import typing as t
from pathlib import Path
from types import ModuleType

import pytest

#: Private names Python itself puts on classes, never the SDK's.
PYTHON_PRIVATE = frozenset({"_abc_impl"})


def symbol(cls: type, name: str) -> str:
    """`singer_sdk.target_base.Target._process_record_message`."""
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def params(func: t.Any) -> tuple[str, ...]:
    """A function's parameter names, without ``self``."""
    return tuple(p for p in inspect.signature(func).parameters if p != "self")


def _tables(compat: ModuleType) -> list[dict[type, dict[str, tuple[str, ...]]]]:
    return [getattr(compat, "OVERRIDDEN", {}), getattr(compat, "CALLED", {})]


def listed_methods(compat: ModuleType) -> list[tuple[type, str, tuple[str, ...]]]:
    """Every (SDK class, private method, parameters) the plugin lists."""
    return [
        (cls, name, names)
        for table in _tables(compat)
        for cls, methods in table.items()
        for name, names in methods.items()
    ]


def each_listed_method(compat: ModuleType) -> pytest.MarkDecorator:
    """Parametrize a test over `listed_methods` as (cls, name, params), ids naming the symbol."""
    methods = listed_methods(compat)
    return pytest.mark.parametrize(
        ("cls", "name", "params"), methods, ids=[symbol(c, n) for c, n, _p in methods]
    )


def method_problem(cls: type, name: str, expected: tuple[str, ...], plugin: str) -> str | None:
    """Why a listed private method no longer fits (gone, or other parameters), or None."""
    func = getattr(cls, name, None)
    if func is None:
        return f"SDK private method {symbol(cls, name)} no longer exists"
    if params(func) != expected:
        return (
            f"SDK private method {symbol(cls, name)} now takes {params(func)}, "
            f"{plugin} was written for {expected}"
        )
    return None


def function_problems(compat: ModuleType, plugin: str) -> list[str]:
    """Listed functions of private SDK modules that are gone or take other parameters."""
    found = []
    for path, expected in getattr(compat, "PRIVATE_FUNCTIONS", {}).items():
        module, name = path.rsplit(".", 1)
        try:
            func = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            found.append(f"SDK private function {path} no longer exists")
            continue
        if expected is not None and params(func) != expected:
            found.append(
                f"SDK private function {path} now takes {params(func)}, "
                f"{plugin} was written for {expected}"
            )
    return found


def module_problems(compat: ModuleType) -> list[str]:
    """Listed private SDK modules that no longer import or provide the listed names."""
    found = []
    for module, names in getattr(compat, "PRIVATE_MODULES", {}).items():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            found.append(f"SDK private module {module} no longer imports: {exc}")
            continue
        found += [
            f"SDK private name {module}.{n} no longer exists" for n in names if not hasattr(mod, n)
        ]
    return found


def attribute_problems(compat: ModuleType, instances: t.Mapping[type, t.Any]) -> list[str]:
    """Listed private attributes missing on real SDK instances ({SDK class: instance})."""
    return [
        f"SDK private attribute {symbol(cls, name)} no longer exists"
        for cls, names in compat.PRIVATE_ATTRIBUTES.items()
        for name in names
        if not hasattr(instances[cls], name)
    ]


def package_modules(compat: ModuleType) -> list[Path]:
    """The plugin package's modules, sdk_compat.py excepted."""
    package = Path(compat.__file__).parent
    return sorted(p for p in package.rglob("*.py") if p.name != "sdk_compat.py")


def _private_sdk_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        imports: list[tuple[str, list[str]]] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            imports = [(node.module, [a.name for a in node.names])]
        elif isinstance(node, ast.Import):
            imports = [(a.name, []) for a in node.names]
        found += [
            (node.lineno, module, names)
            for module, names in imports
            if module.startswith("singer_sdk") and any(p.startswith("_") for p in module.split("."))
        ]
    return found


def private_import_problems(compat: ModuleType) -> list[str]:
    """Imports of private SDK modules outside sdk_compat.py.

    Allowed only in a generated ``common/`` copy (it cannot import sdk_compat), and only of
    names that sdk_compat lists (``PRIVATE_MODULES``, or the modules of ``PRIVATE_FUNCTIONS``).
    """
    allowed = {m: set(n) for m, n in getattr(compat, "PRIVATE_MODULES", {}).items()}
    for path in getattr(compat, "PRIVATE_FUNCTIONS", {}):
        module, name = path.rsplit(".", 1)
        allowed.setdefault(module, set()).add(name)
    package = Path(compat.__file__).parent
    found = []
    for path in package_modules(compat):
        for lineno, module, names in _private_sdk_imports(path):
            shared = path.parent.name == "common"
            if not (shared and names and set(names) <= allowed.get(module, set())):
                found.append(f"{path.relative_to(package)}:{lineno} imports {module} {names}")
    return found


def sdk_private_names(classes: t.Iterable[type]) -> set[str]:
    """Private member names of the SDK classes that `classes` extend (methods, attributes
    defined on the class, and ``self._x`` set anywhere in their source)."""
    names: set[str] = set()
    for cls in classes:
        for base in cls.__mro__:
            if base.__module__.startswith("singer_sdk"):
                names.update(n for n in vars(base) if n.startswith("_") and not n.startswith("__"))
                names.update(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
    return names - PYTHON_PRIVATE


def listed_names(compat: ModuleType) -> set[str]:
    """Every private SDK name the plugin lists (methods and attributes)."""
    methods = {name for _cls, name, _params in listed_methods(compat)}
    return methods | {n for names in compat.PRIVATE_ATTRIBUTES.values() for n in names}


def unlisted_uses(
    compat: ModuleType, classes: t.Iterable[type], listed: set[str] | None = None
) -> list[str]:
    """Overrides (by `classes`) and uses (``x._name`` in the package) of private SDK names
    sdk_compat does not list (`listed`: what counts as listed; all of it by default)."""
    classes = list(classes)
    listed = listed_names(compat) if listed is None else listed
    sdk_private = sdk_private_names(classes)
    found = [
        f"{cls.__name__}.{name} overrides an SDK private member"
        for cls in classes
        for name in vars(cls)
        if name in sdk_private and name not in listed
    ]
    package = Path(compat.__file__).parent
    for path in package_modules(compat):
        for node in ast.walk(ast.parse(path.read_text())):
            attr = node.attr if isinstance(node, ast.Attribute) else ""
            if attr in sdk_private and attr not in listed:
                found.append(f"{path.relative_to(package)}:{node.lineno} uses SDK private '{attr}'")
    return found


def sdk_classes_in(*modules: ModuleType) -> list[type]:
    """The classes defined in `modules` that extend an SDK class."""
    return [
        obj
        for module in modules
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and any(b.__module__.startswith("singer_sdk") for b in obj.__mro__[1:])
    ]
