"""The shared sdk_compat checks (tests/sdk_compat_checks.py) find what they exist to find:
a private SDK method gone or re-signed, a private attribute gone, a private SDK module
imported outside sdk_compat.py, a private SDK member overridden or used but not listed.
Driven on a made-up plugin package written to a temporary directory."""

from __future__ import annotations

import types
from pathlib import Path

import sdk_compat_checks as checks
from singer_sdk.sinks import RecordSink
from singer_sdk.target_base import Target


def _compat(tmp_path: Path, **tables: object) -> types.ModuleType:
    package = tmp_path / "made_up_plugin"
    (package / "common").mkdir(parents=True, exist_ok=True)
    (package / "sdk_compat.py").write_text("from singer_sdk.helpers._batch import StorageTarget\n")
    (package / "sinks.py").write_text(
        "from singer_sdk.helpers._typing import get_datelike_property_type\n"
        "def check(sink):\n    return sink._validator\n"
    )
    (package / "common" / "batch_files.py").write_text(
        "from singer_sdk.helpers._batch import BatchFileFormat, StorageTarget\n"
    )
    compat = types.ModuleType("made_up_plugin.sdk_compat")
    compat.__file__ = str(package / "sdk_compat.py")
    for name, value in {"PRIVATE_ATTRIBUTES": {}, **tables}.items():
        setattr(compat, name, value)
    return compat


def test_a_method_gone_or_re_signed_is_named() -> None:
    assert checks.method_problem(Target, "_process_record_message", ("message_dict",), "p") is None
    gone = checks.method_problem(Target, "_no_such_method", (), "p")
    assert (
        gone == "SDK private method singer_sdk.target_base.Target._no_such_method no longer exists"
    )
    re_signed = checks.method_problem(Target, "_process_record_message", ("record",), "p")
    assert re_signed is not None
    assert "Target._process_record_message now takes ('message_dict',)" in re_signed
    assert "p was written for ('record',)" in re_signed


def test_an_attribute_gone_is_named(tmp_path: Path) -> None:
    compat = _compat(tmp_path, PRIVATE_ATTRIBUTES={Target: ("_latest_state", "_gone")})
    target = types.SimpleNamespace(_latest_state=None)
    assert checks.attribute_problems(compat, {Target: target}) == [
        "SDK private attribute singer_sdk.target_base.Target._gone no longer exists"
    ]


def test_private_imports_outside_sdk_compat_are_named(tmp_path: Path) -> None:
    listed = {"singer_sdk.helpers._batch": ("BatchFileFormat", "StorageTarget")}
    compat = _compat(tmp_path, PRIVATE_MODULES=listed)
    # the common/ copy imports listed names only: allowed; sinks.py is not a common/ copy
    assert checks.private_import_problems(compat) == [
        "sinks.py:1 imports singer_sdk.helpers._typing ['get_datelike_property_type']"
    ]
    compat = _compat(tmp_path, PRIVATE_MODULES={"singer_sdk.helpers._batch": ("StorageTarget",)})
    assert "common/batch_files.py:1 imports singer_sdk.helpers._batch" in " ".join(
        checks.private_import_problems(compat)
    )


def test_unlisted_overrides_and_uses_are_named(tmp_path: Path) -> None:
    class Sink(RecordSink):
        def _remove_sdc_metadata_from_record(self, record: dict) -> None:
            pass

    compat = _compat(tmp_path)
    assert checks.unlisted_uses(compat, [Sink]) == [
        "Sink._remove_sdc_metadata_from_record overrides an SDK private member",
        "sinks.py:3 uses SDK private '_validator'",
    ]
    compat = _compat(
        tmp_path,
        OVERRIDDEN={RecordSink: {"_remove_sdc_metadata_from_record": ("record",)}},
        PRIVATE_ATTRIBUTES={RecordSink: ("_validator",)},
    )
    assert checks.unlisted_uses(compat, [Sink]) == []
