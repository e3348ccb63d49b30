"""Discovery and the catalog: no file at discovery, columns missing from or deselected in the
catalog."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from braze_csv_testkit import write


def test_no_file_at_discovery_allows_extra_columns(tap_runner, export_dir: Path) -> None:
    cfg = {"paths": [str(export_dir / "later-*.csv")]}
    from tap_braze_csv.tap import TapBrazeCsv

    catalog = TapBrazeCsv(config=cfg).catalog_dict
    schema = catalog["streams"][0]["schema"]
    assert schema["additionalProperties"] is True
    write(export_dir / "later-1.csv", "user_id,Shoe Size\nu1,42\n")
    run = tap_runner(cfg, catalog=catalog)
    assert run.records[0]["shoe_size"] == "42"


def test_catalog_without_a_column_drops_it_with_warning(
    tap_runner, export_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    write(export_dir / "a.csv", "user_id,color\nu1,red\n")
    cfg = {"paths": [str(export_dir / "*.csv")]}
    catalog = TapBrazeCsv(config=cfg).catalog_dict
    write(export_dir / "b.csv", "user_id,color,size\nu2,blue,XL\n")
    with caplog.at_level(logging.WARNING):
        run = tap_runner(cfg, catalog=catalog)
    assert run.records[1] == {
        "external_id": "u2",
        "color": "blue",
        "segment_name": "b",
        "_braze_segment_id": None,
        "_sdc_source_file": str(export_dir / "b.csv"),
        "_sdc_source_lineno": 2,
    }
    assert "not in the catalog schema are not emitted: size" in caplog.text


def test_deselected_columns_are_not_emitted(tap_runner, export_dir: Path) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    write(export_dir / "a.csv", "user_id,email,color\nu1,a@x.com,red\n")
    cfg = {"paths": [str(export_dir / "*.csv")]}
    catalog = TapBrazeCsv(config=cfg).catalog_dict
    for md in catalog["streams"][0]["metadata"]:
        if md["breadcrumb"] == ["properties", "email"]:
            md["metadata"]["selected"] = False
    run = tap_runner(cfg, catalog=catalog)
    assert "email" not in run.records[0]
    assert run.records[0]["color"] == "red"


def test_discovery_warns_when_no_file_is_readable(
    export_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tap_braze_csv.tap import TapBrazeCsv

    caplog.set_level(logging.WARNING)
    pattern = str(export_dir / "none-*.zip")
    tap = TapBrazeCsv(config={"paths": [pattern]})
    schema = tap.streams["braze_users"].schema
    assert schema["additionalProperties"] is True
    assert any(r.levelno == logging.WARNING and pattern in r.getMessage() for r in caplog.records)
