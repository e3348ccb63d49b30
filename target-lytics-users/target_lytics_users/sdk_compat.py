"""Every private Meltano SDK name target-lytics-users uses, in one place.

The SDK (``singer-sdk ~=0.54.9``) offers no public hook for what these do; each is listed
with why. ``tests/test_target_lytics_sdk_compat.py`` fails, naming the symbol, when an SDK
upgrade removes one or changes a listed method's parameters, and when a module of the
package uses a private SDK name that is not listed here.

Private modules: ``singer_sdk.helpers._compat`` and ``singer_sdk.helpers._typing`` (the
SDK's own date parsers and invalid-timestamp handling, so the sink checks date-like strings
exactly as the SDK would; re-exported below), and ``singer_sdk.helpers._batch`` (BATCH
messages' encoding and storage), imported by ``common/batch_files.py``, the generated copy
of the repository's ``common/batch_files.py`` (listed here, checked by the test).
"""

from __future__ import annotations

from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget
from singer_sdk.helpers._compat import (
    date_fromisoformat,
    datetime_fromisoformat,
    time_fromisoformat,
)
from singer_sdk.helpers._typing import (
    get_datelike_property_type,
    handle_invalid_timestamp_in_record,
)
from singer_sdk.plugin_base import PluginBase
from singer_sdk.sinks.core import Sink
from singer_sdk.target_base import Target

__all__ = [
    "CALLED",
    "OVERRIDDEN",
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_FUNCTIONS",
    "PRIVATE_MODULES",
    "BaseBatchFileEncoding",
    "BatchFileFormat",
    "StorageTarget",
    "date_fromisoformat",
    "datetime_fromisoformat",
    "get_datelike_property_type",
    "handle_invalid_timestamp_in_record",
    "time_fromisoformat",
]

#: SDK private modules the generated common/ copies import from (they cannot import this
#: module): {module: names}. common/batch_files.py reads BATCH files with these.
PRIVATE_MODULES: dict[str, tuple[str, ...]] = {
    "singer_sdk.helpers._batch": ("BaseBatchFileEncoding", "BatchFileFormat", "StorageTarget"),
}

#: Functions of private SDK modules: {name: parameters, or None for a builtin (the date
#: parsers are `datetime`'s own on Python 3.11+: checked by parsing, see the test)}.
PRIVATE_FUNCTIONS: dict[str, tuple[str, ...] | None] = {
    "singer_sdk.helpers._compat.date_fromisoformat": None,
    "singer_sdk.helpers._compat.datetime_fromisoformat": None,
    "singer_sdk.helpers._compat.time_fromisoformat": None,
    "singer_sdk.helpers._typing.get_datelike_property_type": ("property_schema",),
    "singer_sdk.helpers._typing.handle_invalid_timestamp_in_record": (
        "record",
        "key_breadcrumb",
        "invalid_value",
        "datelike_typename",
        "ex",
        "treatment",
        "logger",
    ),
}

#: SDK private methods the package overrides: {SDK class: {method: parameters after self}}.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    # secrets stripped and number strings parsed where the config is loaded
    PluginBase: {"_validate_config": ("raise_errors",)},
    Target: {
        # Meltano's `config test` stream; the record path is the SDK's
        "_process_schema_message": ("message_dict",),
        "_process_record_message": ("message_dict",),
        # ignored with a warning (collect only adds and merges)
        "_process_activate_version_message": ("message_dict",),
        # every record of a BATCH file handled like a RECORD message (the SDK dropped them)
        "_process_batch_message": ("message_dict",),
        # drain_all flags a full drain; STATE only once Lytics accepted everything before it
        "_drain_all": ("sink_list", "parallelism"),
        "_write_state_message": ("state",),
        # SIGTERM drains between messages, not inside one
        "_handle_termination": ("signum", "frame"),
    },
    Sink: {
        # date-like strings checked, not converted (the sink would only turn them back)
        "_validate_and_parse": ("record",),
        # skips 7 dict pops per record when no `_sdc_*` field is there
        "_remove_sdc_metadata_from_record": ("record",),
    },
}

#: SDK private methods the package calls.
CALLED: dict[type, dict[str, tuple[str, ...]]] = {
    Target: {
        "_assert_line_requires": ("message_dict", "requires"),
        "_assert_sink_exists": ("stream_name",),
    },
}

#: SDK private attributes the package reads or writes.
PRIVATE_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    # the config dict as loaded (secrets stripped, numbers parsed before validation)
    PluginBase: ("_config",),
    Target: (
        # the drain age, per run (`max_record_age_seconds`)
        "_MAX_RECORD_AGE_IN_MINUTES",
        # every sink, to count records not yet accepted before STATE
        "_sinks_active",
        "_sinks_to_clear",
    ),
    Sink: (
        # the compiled validator the SDK built through `get_validator`
        "_validator",
        # fields already warned about (the SDK's own warning, once per field)
        "_warned_missing_fields",
        # records tallied at a drain: only those Lytics confirmed
        "_batch_records_read",
    ),
}
