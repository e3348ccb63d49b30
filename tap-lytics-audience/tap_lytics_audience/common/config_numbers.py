# generated from common/config_numbers.py by scripts/sync_common.py: edit the original
"""Number settings given as strings (Meltano env vars): parsed into numbers at config load.

Meltano's `kind: decimal` casts an environment variable to `Decimal`, which it then cannot
write to the plugin's JSON config file (TypeError, meltano 4.4). meltano.yml therefore
declares number settings as `kind: string`, so an env var reaches the plugin as a string
such as "0.7"; this turns it back into the number the config schema asks for.

Every plugin installs on its own, so each carries this small module (same code).
"""

from __future__ import annotations

import math
import typing as t


def _types(prop: t.Mapping[str, t.Any]) -> list[str]:
    types = prop.get("type") or []
    return [types] if isinstance(types, str) else list(types)


def _parse(text: str, *, integer: bool) -> int | float:
    """Parse `text` (an int for a whole-number literal); ValueError when not a number."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        if integer:
            raise
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _coerce_string(
    out: dict[str, t.Any], name: str, prop: t.Mapping[str, t.Any], types: list[str], label: str
) -> str | None:
    """Parse `out[name]` (a string) in place; an empty one is removed (not set).

    Returns the error naming the setting `label` when the string is not a number.
    """
    value = out[name]
    if not value.strip():
        del out[name]
        return None
    integer = "number" not in types
    try:
        out[name] = _parse(value, integer=integer)
    except ValueError:
        shown = "" if prop.get("secret") else f" (got {value!r})"
        kind = "a whole number" if integer else "a number"
        return f"Setting `{label}` must be {kind}{shown}."
    return None


def coerce_number_strings(
    config: t.Mapping[str, t.Any], schema: t.Mapping[str, t.Any], prefix: str = ""
) -> tuple[dict[str, t.Any], list[str]]:
    """Return a copy of `config` with numeric strings of number/integer settings parsed.

    An empty string counts as not set (the setting's default applies). Also returns one
    error per setting whose string is not a number, naming the setting.
    """
    out = dict(config)
    errors: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        value = out.get(name)
        types = _types(prop)
        if isinstance(value, str) and ("number" in types or "integer" in types):
            error = _coerce_string(out, name, prop, types, f"{prefix}{name}")
            if error is not None:
                errors.append(error)
        elif isinstance(value, dict) and prop.get("properties"):
            out[name], nested = coerce_number_strings(value, prop, prefix=f"{prefix}{name}.")
            errors += nested
    return out, errors
