"""Bucket mode of triggered exports: wait for Braze to write them to the workspace's bucket.

With S3, Azure or Google Cloud Storage credentials in the workspace, ``/users/export/segment``
returns no download URL and Braze writes the files to
``segment-export/<SEGMENT_ID>/<YYYY-MM-dd>/<object_prefix>/<file>.zip`` (``.gz`` with
``output_format: gzip``), the date being the day the export finished (Braze docs
``post_users_segment.md``). The files are listed and read through the tap's object storage
layer (:mod:`tap_braze_csv.cloud`, the same settings and credential chains as `paths`).

Braze documents no completion marker, so an export is taken as complete once at least one of
its files exists and the listing (names and sizes) has not changed for ``settle_seconds``.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from tap_braze_csv.rest_export import BrazeExportError, ReadyExport


class ExportNotInBucketError(BrazeExportError):
    """No file of the export is in the bucket (yet, or any more)."""


def _dates(requested_at: str) -> list[str]:
    today = dt.datetime.now(dt.timezone.utc).date()
    try:
        start = dt.datetime.fromisoformat(requested_at.replace("Z", "+00:00")).date()
    except ValueError:
        start = today
    start = min(start, today) - dt.timedelta(days=1)  # clocks differ; the day may have turned
    days = (today + dt.timedelta(days=1) - start).days
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(max(days, 1) + 1)]


def _listing(source: Any, bucket: str, segment_id: str, prefix: str, requested_at: str) -> list:
    """List the export's files in the bucket now, over every day it may have been written on."""
    refs = []
    for day in _dates(requested_at):
        refs.extend(source.list_prefix(f"{bucket}/segment-export/{segment_id}/{day}/{prefix}/"))
    return refs


def _timed_out(where: str, settings: Any, refs: list) -> BrazeExportError:
    """Build the error for a ``wait_timeout`` run out: files still changing, or none at all."""
    if refs:
        return BrazeExportError(
            f"{where}: files were still being added when rest_export.wait_timeout "
            f"({settings.wait_timeout:g}s) ran out; run again later"
        )
    return ExportNotInBucketError(
        f"{where}: no file appeared within rest_export.wait_timeout "
        f"({settings.wait_timeout:g}s); check rest_export.bucket_url and the workspace's "
        "export credentials, or raise wait_timeout"
    )


def wait_for_bucket_export(
    coordinator: Any, segment_id: str, prefix: str, requested_at: str, deadline: float
) -> ReadyExport:
    """List the export's files until complete (stable listing) or ``deadline``; return them.

    Polls every ``poll_interval`` with the export client's sleep (interrupted when a signal
    stops the run). This is waiting, not retrying: a listing that fails is the object store
    client's to retry (its own settings), and stops the run when it gives up.
    """
    from tap_braze_csv.cloud import object_source

    settings = coordinator.settings
    bucket = settings.bucket_url
    if coordinator.bucket is None:
        coordinator.bucket = object_source(bucket, coordinator.config)
    source = coordinator.bucket
    where = f"Braze export {prefix} of segment {segment_id} in {bucket}"
    previous: tuple[tuple[str, int], ...] | None = None
    stable_since = 0.0
    while True:
        refs = _listing(source, bucket, segment_id, prefix, requested_at)
        now = time.monotonic()
        signature = tuple(sorted((ref.path, int(ref.size)) for ref in refs))
        if signature != previous:
            previous, stable_since = signature, now
            if not refs:
                coordinator.logger.info("%s: no file yet; waiting", where)
        if refs and now - stable_since >= settings.settle_seconds:
            break
        if now + settings.poll_interval > deadline:
            raise _timed_out(where, settings, refs)
        coordinator.client.sleep(settings.poll_interval)
    refs.sort(key=lambda ref: ref.path)
    coordinator.logger.info("%s: %d file(s) ready", where, len(refs))

    def opener(ref: Any) -> Callable[[], BinaryIO]:
        return lambda: source.open(ref)

    files = [(posixpath.basename(ref.path), opener(ref)) for ref in refs]
    return ReadyExport(segment_id, prefix, requested_at, files)
