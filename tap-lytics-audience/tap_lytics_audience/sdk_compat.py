"""Every private Meltano SDK name tap-lytics-audience uses, in one place.

The SDK (``singer-sdk ~=0.54.9``) offers no public hook for what these do; each is listed
with why. ``tests/test_tap_lytics_sdk_compat.py`` fails, naming the symbol, when an SDK
upgrade removes one or changes a listed method's parameters, and when a module of the
package uses a private SDK name that is not listed here. The package imports no private
SDK module.
"""

from __future__ import annotations

from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.plugin_base import PluginBase

__all__ = [
    "CALLED",
    "OVERRIDDEN",
    "PRIVATE_ATTRIBUTES",
    "PluginBase",
    "RESTStream",
    "Stream",
    "Tap",
]

#: SDK private methods the package overrides: {SDK class: {method: parameters after self}}.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    # secrets stripped and number strings parsed where the config is loaded
    PluginBase: {"_validate_config": ("raise_errors",)},
    # SIGTERM/SIGINT: STATE written between records, exit 128 + N
    Tap: {"_handle_termination": ("signum", "frame")},
}

#: SDK private methods the package calls.
CALLED: dict[type, dict[str, tuple[str, ...]]] = {
    RESTStream: {
        # the scan loop mirrors `request_records` (it runs in worker threads, with their
        # own sessions), so it builds requests and logs durations the SDK's way
        "_prepare_request": ("context", "page"),
        "_write_request_duration_log": ("endpoint", "response", "context", "extra_tags"),
    },
}

#: SDK private attributes the package reads or writes.
PRIVATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    # the config dict as loaded (secrets stripped, numbers parsed before validation)
    PluginBase: ("_config",),
    # a stream's tap: run-wide state shared by the streams (segments, scan ledger)
    Stream: ("_tap",),
}
