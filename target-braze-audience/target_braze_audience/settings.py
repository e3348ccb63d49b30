"""The settings the delta pipeline reads, once, from the validated target config."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

ARRAY_WRITE_MODES = ("delta", "set_when_cheaper")


def _or(config: t.Mapping[str, t.Any], key: str, default: t.Any) -> t.Any:
    """`config[key]`, or `default` when it is absent or empty (None, "", 0)."""
    return config.get(key) or default


@dataclass
class EngineSettings:
    """The settings the pipeline needs (read once from the target config)."""

    attribute_name: str = "lytics_segments"
    identifier_field: str = "external_id"
    alias_label: str | None = None
    external_id_field: str = "external_id"
    audience_field: str = "audience_slug"
    snapshot_stream: str = "audience_snapshots"
    ignore_streams: frozenset[str] = frozenset({"audiences"})
    backfill_existing_users: bool = True
    update_existing_only: bool = False
    batch_size: int = 75
    max_concurrency: int = 4
    dry_run: bool = False
    max_array_length: int = 25
    update_only_reoffers: int = 5
    update_only_reoffer_hours: float = 24.0
    max_removal_fraction: float = 0.5
    array_write_mode: str = "delta"

    @property
    def set_mode(self) -> bool:
        """Whether users with two or more changes get their complete array."""
        return self.array_write_mode == "set_when_cheaper"

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> EngineSettings:
        """Build from the validated target config."""
        return cls(
            attribute_name=_or(config, "attribute_name", "lytics_segments"),
            identifier_field=_or(config, "identifier_field", "external_id"),
            alias_label=config.get("alias_label"),
            external_id_field=_or(config, "external_id_field", "external_id"),
            audience_field=_or(config, "audience_field", "audience_slug"),
            snapshot_stream=_or(config, "snapshot_stream", "audience_snapshots"),
            ignore_streams=frozenset(config.get("ignore_streams", ["audiences"]) or ()),
            backfill_existing_users=bool(config.get("backfill_existing_users", True)),
            update_existing_only=bool(config.get("update_existing_only", False)),
            batch_size=max(1, min(int(_or(config, "batch_size", 75)), 75)),
            max_concurrency=max(1, int(_or(config, "max_concurrency", 4))),
            dry_run=bool(config.get("dry_run", False)),
            max_array_length=int(_or(config, "max_array_length", 25)),
            update_only_reoffers=int(config.get("update_only_reoffers", 5)),
            update_only_reoffer_hours=float(config.get("update_only_reoffer_hours", 24.0)),
            max_removal_fraction=min(1.0, max(0.0, float(config.get("max_removal_fraction", 0.5)))),
            array_write_mode=_or(config, "array_write_mode", "delta"),
        )
