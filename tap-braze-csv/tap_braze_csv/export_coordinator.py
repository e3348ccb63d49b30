"""The triggered exports of one run: each segment's export started once, waited for, downloaded.

Both streams (``braze_users``, ``braze_engagement``) read the same exports, so one coordinator
per run triggers them (:class:`tap_braze_csv.rest_export.ExportClient`), waits for a download URL
or for the files in the workspace's bucket (:mod:`tap_braze_csv.rest_bucket`), and keeps the
downloads in a private temporary directory removed when the tap ends.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tap_braze_csv.rest_bucket import ExportNotInBucketError, wait_for_bucket_export
from tap_braze_csv.rest_export import (
    BrazeExportError,
    ExportClient,
    ReadyExport,
    RestExportSettings,
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ExportCoordinator:
    """Triggers each segment's export at most once per run and hands it to both streams.

    All exports a stream needs are triggered before the first one is waited for, so Braze
    builds them in parallel (segments are different, so Braze's one-export-per-segment rule
    holds). Bucket mode can resume a previous run's export by its ``object_prefix``.
    """

    def __init__(
        self, settings: RestExportSettings, logger: logging.Logger, config: Mapping[str, Any]
    ) -> None:
        self.settings = settings
        self.config = config
        self.logger = logger
        self.client = ExportClient(settings, logger)
        self._triggered: dict[str, dict[str, Any]] = {}
        self._ready: dict[str, ReadyExport] = {}
        self._tmp: str | None = None
        self.bucket: Any = None  # filled by the bucket reader when bucket_url is set

    def close(self) -> None:
        """Remove downloaded archives and close connections."""
        self.client.close()
        if self.bucket is not None:
            self.bucket.close()
            self.bucket = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="tap-braze-export-")
            # The SDK's Tap.sync_all is final and streams do not know which one reads last:
            # downloads go when the process exits (also after SIGTERM, which raises SystemExit).
            atexit.register(self.close)
        return self._tmp

    def trigger_all(self, segment_ids: Sequence[str], resume: Mapping[str, str]) -> None:
        """Start exports of segments not started yet this run (not those being resumed)."""
        for segment_id in segment_ids:
            if segment_id in self._triggered or segment_id in self._ready:
                continue
            if segment_id in resume and self.settings.bucket_url:
                continue
            answer = self.client.trigger(segment_id)
            answer["requested_at"] = _utcnow().isoformat()
            answer["monotonic"] = time.monotonic()
            self._triggered[segment_id] = answer
            self.logger.info(
                "Braze export of segment %s started (object_prefix %s, delivered %s)",
                segment_id,
                answer["object_prefix"],
                "by download URL" if answer["url"] else "to the workspace's bucket",
            )

    def export_for(
        self, segment_id: str, resume_prefix: str | None = None, resume_requested_at: str = ""
    ) -> ReadyExport:
        """Return one segment's ready export (triggering, waiting and downloading as needed)."""
        ready = self._ready.get(segment_id)
        if ready is not None:
            return ready
        s = self.settings
        if resume_prefix and s.bucket_url and segment_id not in self._triggered:
            # Files of an export being resumed are there already (or gone): look briefly (a
            # listing takes a few requests, so allow a few polls beyond settle_seconds).
            deadline = time.monotonic() + s.settle_seconds + 3 * s.poll_interval + 30
            try:
                ready = self._bucket_export(
                    segment_id, resume_prefix, resume_requested_at, deadline
                )
            except ExportNotInBucketError:
                self.logger.warning(
                    "Segment %s: export %s, interrupted in the previous run, is no longer in the "
                    "bucket; starting a new export",
                    segment_id,
                    resume_prefix,
                )
            else:
                self._ready[segment_id] = ready
                return ready
        self.trigger_all([segment_id], {})
        answer = self._triggered[segment_id]
        deadline = float(answer["monotonic"]) + s.wait_timeout
        prefix = str(answer["object_prefix"])
        if answer["url"]:
            dest = os.path.join(self._tmpdir(), f"export-{len(self._ready)}.archive")
            self.client.download(segment_id, str(answer["url"]), dest, deadline)
            self.logger.info(
                "Downloaded the export of segment %s (%d bytes)", segment_id, os.path.getsize(dest)
            )
            ready = ReadyExport(
                segment_id,
                prefix,
                str(answer["requested_at"]),
                [("archive.zip", lambda: open(dest, "rb"))],  # noqa: SIM115 - closed by members()
            )
        elif s.bucket_url:
            ready = self._bucket_export(segment_id, prefix, str(answer["requested_at"]), deadline)
        else:
            raise BrazeExportError(
                f"Braze export of segment {segment_id}: Braze returned no download URL, so the "
                "workspace writes exports to its own cloud storage; set rest_export.bucket_url "
                "(e.g. s3://my-braze-exports) so the tap reads them there"
            )
        self._ready[segment_id] = ready
        return ready

    def _bucket_export(
        self, segment_id: str, prefix: str, requested_at: str, deadline: float
    ) -> ReadyExport:
        return wait_for_bucket_export(self, segment_id, prefix, requested_at, deadline)
