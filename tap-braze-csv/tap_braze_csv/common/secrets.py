# generated from common/secrets.py by scripts/sync_common.py: edit the original
"""Secret settings as they come from files: surrounding whitespace removed, never echoed.

Every plugin installs on its own, so each carries a copy of this module (scripts/sync_common.py).
"""

from __future__ import annotations

import typing as t


def strip_secrets(config: dict[str, t.Any], schema: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return a copy of `config` whose secret strings (per the schema) are stripped.

    A secret mounted from a file (Kubernetes, Docker, Vault agent) usually ends with a
    newline, which would otherwise reach HTTP headers and their error messages.
    """
    out = dict(config)
    for name, prop in (schema.get("properties") or {}).items():
        value = out.get(name)
        if isinstance(value, str) and prop.get("secret"):
            out[name] = value.strip()
        elif isinstance(value, dict) and prop.get("properties"):
            out[name] = strip_secrets(value, prop)
    return out


def header_secret_errors(config: t.Mapping[str, t.Any], names: t.Iterable[str]) -> list[str]:
    """Errors for header secrets that are empty or hold control characters (value never shown)."""
    errors = []
    for name in names:  # a dotted name reaches into an object setting: "rest_export.api_key"
        value: t.Any = config
        for part in name.split("."):
            value = value.get(part) if isinstance(value, t.Mapping) else None
        if not isinstance(value, str):
            continue
        if not value:
            errors.append(f"Setting `{name}` is empty (or only whitespace).")
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            errors.append(
                f"Setting `{name}` contains a line break or another control character inside "
                "the value (surrounding whitespace is removed); set it to the bare secret."
            )
    return errors
