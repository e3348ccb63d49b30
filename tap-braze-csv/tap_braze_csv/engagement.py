"""The ``braze_engagement`` stream: campaigns and Canvases each user received (JSON exports).

One record per user and ``campaigns_received``/``canvases_received`` entry of Braze's REST
segment export (see :mod:`tap_braze_csv.jsonl`), keyed by the user's ``braze_id`` plus the
entry's kind and API id. Records are read from the same exports as ``braze_users`` (triggered
once per run, see :mod:`tap_braze_csv.rest_export`) with the same writer, signal handling and
state rules (:mod:`tap_braze_csv.export_sync`).
"""

from __future__ import annotations

import copy
from collections.abc import Generator
from typing import Any

from tap_braze_csv.export_sync import sync_rest_exports
from tap_braze_csv.jsonl import ENGAGEMENT_KEY_PROPERTIES, ENGAGEMENT_SCHEMA
from tap_braze_csv.streams import BrazeUsersStream

ENGAGEMENT_STREAM = "braze_engagement"


class BrazeEngagementStream(BrazeUsersStream):
    """Campaign and Canvas engagement per user, from triggered JSON exports."""

    primary_keys = ENGAGEMENT_KEY_PROPERTIES  # type: ignore[assignment]

    def __init__(self, tap: Any, schema: dict[str, Any] | None = None) -> None:
        super().__init__(
            tap=tap, schema=schema or copy.deepcopy(ENGAGEMENT_SCHEMA), name=ENGAGEMENT_STREAM
        )

    def _sync_all_files(
        self, progress: Any, writer: Any, counter: Any, timer: Any
    ) -> Generator[dict, Any, None]:
        """No files here: only the triggered exports."""
        with counter, timer:
            try:
                yield from sync_rest_exports(self, "engagement", writer)
                writer.flush()
            except BaseException:
                self._flush_on_error(writer)
                raise
