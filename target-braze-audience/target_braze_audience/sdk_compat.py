"""Every private Meltano SDK name this package uses, in one place.

The SDK (``singer-sdk ~=0.54.9``) offers no public hook for what these do; each is
listed with why it is needed. ``tests/test_braze_audience_sdk_compat.py`` fails, naming
the symbol, when an SDK upgrade removes one or changes its signature, and when the
package uses a private SDK name that is not listed here.

Private modules (:data:`PRIVATE_MODULES`): ``singer_sdk.helpers._batch`` (the BATCH
message's encoding and storage), imported by ``common/batch_files.py``, which reads BATCH
files itself (see there why). That module is shared with target-lytics-users (copied
into ``target_braze_audience/common/`` by ``scripts/sync_common.py``), so it cannot
import this one: the names it uses are listed and checked here instead.

Private attributes (read or written through the functions below, never per record):

- ``Sink._validator``: the stream's compiled validator, called directly on the
  target's fast record path (the SDK's per-record path costs more than the target's
  work, see ``TargetBrazeAudience._process_record_message``).
- ``Sink._total_records_read``: kept true for records taken on that fast path.
- ``Target._latest_state``: cleared in a dry run so no STATE is emitted.
- ``PluginBase._config``: secrets stripped and number strings parsed where the config
  is loaded, before validation and before anything can log it.

Private methods overridden (:data:`OVERRIDDEN`) or called (:data:`CALLED`) are checked by
name and parameters.
"""

from __future__ import annotations

import typing as t

from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget
from singer_sdk.plugin_base import PluginBase
from singer_sdk.sinks.core import Sink
from singer_sdk.target_base import Target

if t.TYPE_CHECKING:
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

__all__ = [
    "CALLED",
    "OVERRIDDEN",
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_MODULES",
    "BaseBatchFileEncoding",
    "BatchFileFormat",
    "StorageTarget",
    "assert_sink_exists",
    "clear_latest_state",
    "raw_config",
    "records_read",
    "set_raw_config",
    "set_records_read",
    "sink_validator",
]

#: SDK private modules the package imports from: {module: names}.
PRIVATE_MODULES: dict[str, tuple[str, ...]] = {
    "singer_sdk.helpers._batch": ("BaseBatchFileEncoding", "BatchFileFormat", "StorageTarget"),
}

#: SDK private methods the package overrides: {SDK class: {method: parameters after self}}.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    PluginBase: {"_validate_config": ("raise_errors",)},
    Target: {
        "_process_schema_message": ("message_dict",),
        "_process_record_message": ("message_dict",),
        "_process_activate_version_message": ("message_dict",),
        "_process_batch_message": ("message_dict",),
        "_write_state_message": ("state",),
        "_handle_termination": ("signum", "frame"),
    },
}

#: SDK private methods the package calls (through the functions below).
CALLED: dict[type, dict[str, tuple[str, ...]]] = {
    Target: {"_assert_sink_exists": ("stream_name",)},
}

#: SDK private attributes the package reads or writes (through the functions below).
PRIVATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    Sink: ("_validator", "_total_records_read"),
    Target: ("_latest_state",),
    PluginBase: ("_config",),
}


def sink_validator(sink: Sink) -> BaseJSONSchemaValidator | None:
    """Return the validator the SDK built for `sink` (None when validation is off)."""
    return sink._validator


def records_read(sink: Sink) -> int:
    """Return how many records the SDK counts as read by `sink`."""
    return sink._total_records_read


def set_records_read(sink: Sink, count: int) -> None:
    """Set the SDK's count of records read by `sink` (records taken on the fast path)."""
    sink._total_records_read = count


def clear_latest_state(target: Target) -> None:
    """Forget the latest STATE so the end of input emits none."""
    target._latest_state = None


def raw_config(plugin: PluginBase) -> dict[str, t.Any]:
    """Return the plugin's config dict as loaded (before validation)."""
    return plugin._config


def set_raw_config(plugin: PluginBase, config: dict[str, t.Any]) -> None:
    """Replace the plugin's config dict (before validation)."""
    plugin._config = config


def assert_sink_exists(target: Target, stream: str) -> None:
    """Raise the SDK's RecordsWithoutSchemaException when `stream` had no SCHEMA."""
    target._assert_sink_exists(stream)
