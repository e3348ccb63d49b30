"""Every private singer-sdk name tap-braze-csv uses, in one place.

The plugin pins ``singer-sdk~=0.54.9``; these names are not part of the SDK's public API and
may change in any release. Code elsewhere in the package calls the wrappers below instead of
reaching into SDK objects, and overrides only the private methods listed in
:data:`OVERRIDDEN` (and calls those in :data:`CALLED`). ``tests/test_sdk_compat.py`` checks each name against the installed SDK
and fails naming the symbol when an upgrade removes or changes one, and fails naming the
file and line when private SDK names are used outside this module.

Why each is used:

- ``Stream._sync_records`` (overridden): the stream's state is per file and per line, not a
  replication-key bookmark, and the SDK's per-record path is the tap's bottleneck
  (see :mod:`tap_braze_csv.output`).
- ``Stream._write_record_message`` / ``Stream._write_state_message``: the SDK's own record
  (stream maps, flattening) and STATE writers, called from the replacement sync loop.
- ``Stream._abort_sync``: the SDK's dry-run record limit (``--test``), honoured by the loop.
- ``Stream._stream_version``: the ACTIVATE_VERSION version the SDK set, put on fast-path
  records.
- ``Stream._tap``: the tap owning a stream (its REST export coordinator, its message writer).
- ``PluginBase._config`` and ``PluginBase._validate_config`` (overridden): secrets read from
  files and number settings given as strings are cleaned before the SDK validates them.
- ``Tap._handle_termination`` (overridden): exit 128 + signal number, not 0, on SIGTERM,
  once the message writer's write in progress is over.
"""

from __future__ import annotations

from typing import Any

from singer_sdk import Stream, Tap
from singer_sdk.plugin_base import PluginBase

#: Private SDK methods the package overrides: {SDK class: {method: parameters after self}}.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    Stream: {"_sync_records": ("context", "write_messages")},
    PluginBase: {"_validate_config": ("raise_errors",)},
    Tap: {"_handle_termination": ("signum", "frame")},
}

#: Private SDK methods the package calls (through the wrappers below).
CALLED: dict[type, dict[str, tuple[str, ...]]] = {
    Stream: {
        "_write_record_message": ("record",),
        "_write_state_message": (),
        "_abort_sync": ("abort_reason",),
    },
}

#: Private SDK instance attributes the package reads or writes: class -> names.
PRIVATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    Stream: ("_tap", "_stream_version"),
    PluginBase: ("_config",),
}


def write_record_message(stream: Stream, record: dict[str, Any]) -> None:
    """Write one RECORD through the SDK (stream maps, flattening, selection)."""
    stream._write_record_message(record)


def write_state_message(stream: Stream) -> None:
    """Write the SDK's STATE message for the tap now."""
    stream._write_state_message()


def abort_sync(stream: Stream, reason: Exception) -> None:
    """Stop the sync the SDK's way (the dry-run record limit): the SDK writes STATE and raises."""
    stream._abort_sync(reason)


def stream_version(stream: Stream) -> int | None:
    """Return the ACTIVATE_VERSION version of this sync (None when not enabled)."""
    return stream._stream_version


def stream_tap(stream: Stream) -> Any:
    """Return the tap a stream belongs to."""
    return stream._tap


def raw_config(plugin: PluginBase) -> dict[str, Any]:
    """Return the plugin's config as given (mutable; ``config`` is a read-only view of it)."""
    return plugin._config


def set_raw_config(plugin: PluginBase, config: dict[str, Any]) -> None:
    """Replace the plugin's config (before the SDK validates it)."""
    plugin._config = config
