# generated from common/retry_headers.py by scripts/sync_common.py: edit the original
"""Reading the waits an HTTP server asks for: `Retry-After` and Braze's `X-RateLimit-Reset`.

The one piece of the retry mechanics a library cannot read for the plugins (issue 15), so
every plugin reads both headers the same way:

- `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date; seconds from now,
  never negative;
- `X-RateLimit-Reset` (Braze rate-limit headers): the UTC epoch second the limit window
  resets; seconds from now, never negative;
- a value that is absent, unparsable or not a finite number (`inf`, `nan`: Python's `float`
  takes them) is None, so the caller falls back to its own backoff instead of waiting forever
  or not at all.

Every plugin installs on its own, so each carries a copy of this module
(scripts/sync_common.py).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header value, or None (see the module)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    seconds = _finite(value)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are GMT
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def rate_limit_reset_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds until an `X-RateLimit-Reset` epoch second, or None (see the module)."""
    reset = _finite(value.strip()) if value else None
    if reset is None:
        return None
    return max(0.0, reset - (time.time() if now is None else now))
