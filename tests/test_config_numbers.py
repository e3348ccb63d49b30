"""Number settings given as strings (how Meltano passes env vars of `kind: string` settings)
are parsed by each plugin at config load; a non-number fails naming the setting."""

from __future__ import annotations

import typing as t

import pytest
from singer_sdk.exceptions import ConfigValidationError
from tap_braze_csv.tap import TapBrazeCsv
from tap_lytics_audience.tap import TapLyticsAudience
from target_braze_audience.target import TargetBrazeAudience
from target_lytics_users.target import TargetLyticsUsers

BASE: dict[type, dict[str, t.Any]] = {
    TapBrazeCsv: {"paths": ["/nonexistent/export.csv"]},
    TapLyticsAudience: {"api_token": "t", "audiences": ["vip"]},
    TargetBrazeAudience: {"api_key": "k", "rest_endpoint": "http://127.0.0.1:9"},
    TargetLyticsUsers: {"api_token": "t"},
}


def number_settings(schema: dict, prefix: str = "") -> list[tuple[str, ...]]:
    """Paths of the schema's number settings, nested objects included."""
    out: list[tuple[str, ...]] = []
    for name, prop in schema.get("properties", {}).items():
        types = prop.get("type") or []
        types = [types] if isinstance(types, str) else types
        if "number" in types:
            out.append((name,))
        elif prop.get("properties"):
            out += [(name, *sub) for sub in number_settings(prop)]
    return out


def with_value(config: dict, path: tuple[str, ...], value: object) -> dict:
    out = dict(config)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = with_value(out.get(path[0]) or {}, path[1:], value)
    return out


def get(config: t.Mapping, path: tuple[str, ...]) -> object:
    for key in path:
        config = config[key]
    return config


def get_schema(schema: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        schema = schema["properties"][key]
    return schema


def get_default(schema: dict, path: tuple[str, ...]) -> object:
    return get_schema(schema, path).get("default")


@pytest.mark.parametrize("plugin", list(BASE), ids=lambda c: c.__name__)
def test_number_settings_given_as_strings_are_numbers_in_the_plugin(plugin: type) -> None:
    paths = number_settings(plugin.config_jsonschema)
    assert paths, "every plugin has number settings"
    for path in paths:
        low = get_schema(plugin.config_jsonschema, path).get("minimum", 0)
        for text, number in ((f"{low + 0.5}", low + 0.5), (f" {low + 1} ", low + 1)):
            instance = plugin(config=with_value(BASE[plugin], path, text))
            assert get(instance.config, path) == number, path
        # Empty counts as not set: the default applies.
        instance = plugin(config=with_value(BASE[plugin], path, ""))
        try:
            value = get(instance.config, path)
        except KeyError:
            value = None
        assert value == get_default(plugin.config_jsonschema, path), path
        name = ".".join(path)
        for bad in ("soon", "nan", "inf"):
            with pytest.raises(ConfigValidationError) as exc:
                plugin(config=with_value(BASE[plugin], path, bad))
            assert f"Setting `{name}` must be a number (got {bad!r})." in str(exc.value)
