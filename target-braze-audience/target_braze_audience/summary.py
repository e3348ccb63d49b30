"""The run summary: what a run did, per audience and in total, and its log lines.

Filled by the pipeline (:mod:`target_braze_audience.deltas`) and by delivery
(:mod:`target_braze_audience.delivery`); logged once at the end of a run (also when it
stops early), and kept by the target as ``last_summary``.
"""

from __future__ import annotations

import logging
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class AudienceStats:
    """Per-audience outcome of a run."""

    records: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: int = 0
    baseline: int = 0
    pending: int = 0
    update_only: int = 0
    reoffered: int = 0
    kept: int = 0
    held: int = 0
    snapshot: str = "no snapshot"


@dataclass
class RunSummary:
    """What a run did (also logged)."""

    dry_run: bool = False
    audiences: dict[str, AudienceStats] = field(default_factory=lambda: defaultdict(AudienceStats))
    records: int = 0
    invalid_records: int = 0
    requests: int = 0
    http_attempts: int = 0
    rate_limited: int = 0
    objects_sent: int = 0
    values_sent: int = 0
    failed_requests: int = 0
    stopped_requests: int = 0  # not sent, or not retried, because the run was stopping
    rejected_objects: int = 0
    queued_requests: int = 0
    refused_requests: int = 0
    split_requests: int = 0
    batch_size: int = 0
    reoffered: int = 0
    update_only_gave_up: int = 0
    over_array_length: int = 0
    array_write_mode: str = "delta"
    data_points: int = 0  # what Braze bills for the accepted objects (values, or 1 per set)
    data_points_saved: int = 0  # vs delta mode: values of set objects minus one per set
    set_objects: int = 0  # accepted objects assigning the whole array
    delta_objects: int = 0  # accepted objects carrying add/remove

    def as_dict(self) -> dict[str, t.Any]:
        """Return a JSON-friendly copy."""
        out = {k: v for k, v in self.__dict__.items() if k != "audiences"}
        out["audiences"] = {a: dict(s.__dict__) for a, s in sorted(self.audiences.items())}
        return out


def log_summary(
    s: RunSummary,
    logger: logging.Logger,
    *,
    update_existing_only: bool,
    update_only_reoffers: int,
) -> None:
    """One line per audience plus totals (and the update-only line when that mode is on)."""
    _log_audiences(s, logger)
    _log_totals(s, logger)
    if update_existing_only:
        _log_update_only(s, logger, update_only_reoffers)


def _dry(s: RunSummary) -> str:
    return " (dry run)" if s.dry_run else ""


def _log_audiences(s: RunSummary, logger: logging.Logger) -> None:
    for aud, st in sorted(s.audiences.items()):
        logger.info(
            "Summary%s audience '%s': added=%d removed=%d unchanged=%d rejected=%d "
            "baseline=%d pending=%d kept=%d held=%d records=%d update_only=%d reoffered=%d; %s",
            _dry(s),
            aud,
            st.added,
            st.removed,
            st.unchanged,
            st.rejected,
            st.baseline,
            st.pending,
            st.kept,
            st.held,
            st.records,
            st.update_only,
            st.reoffered,
            st.snapshot,
        )


def _log_totals(s: RunSummary, logger: logging.Logger) -> None:
    verb = "would be" if s.dry_run else ""
    logger.info(
        "Summary%s: records=%d invalid=%d requests%s=%d objects=%d attribute values=%d "
        "data points=%d (array_write_mode=%s: saved=%d, set objects=%d, delta objects=%d) "
        "rejected objects=%d failed requests=%d not sent (stopping)=%d "
        "http attempts=%d "
        "rate limited=%d queued (202)=%d refused requests=%d split=%d batch_size=%d "
        "users over max_array_length=%d",
        _dry(s),
        s.records,
        s.invalid_records,
        f" {verb}".rstrip(),
        s.requests,
        s.objects_sent,
        s.values_sent,
        s.data_points,
        s.array_write_mode,
        s.data_points_saved,
        s.set_objects,
        s.delta_objects,
        s.rejected_objects,
        s.failed_requests,
        s.stopped_requests,
        s.http_attempts,
        s.rate_limited,
        s.queued_requests,
        s.refused_requests,
        s.split_requests,
        s.batch_size,
        s.over_array_length,
    )


def _log_update_only(s: RunSummary, logger: logging.Logger, reoffers: int) -> None:
    logger.info(
        "Summary%s: update_existing_only: %d adds %s sent update-only (Braze skips "
        "users it does not know, silently); %d of them re-offers of earlier "
        "update-only adds (each may cost a data point), %d no longer re-offered "
        "after update_only_reoffers=%d",
        _dry(s),
        sum(st.update_only for st in s.audiences.values()),
        "would be" if s.dry_run else "were",
        s.reoffered,
        s.update_only_gave_up,
        reoffers,
    )


def refused_message(refused: t.Mapping[str, str]) -> str:
    """Explain audiences skipped because another run holds them ({audience: holder})."""
    names = ", ".join(f"'{a}' (held by {h})" for a, h in sorted(refused.items()))
    return (
        f"Audience(s) held by another run were not loaded by this run: {names}. Their "
        "records and snapshots were skipped: nothing of them was written, delivered or "
        "removed; everything else was delivered. No STATE was emitted, so the tap sends "
        "them again next run. Give each concurrent job its own audiences (README: "
        "Scaling out)."
    )
