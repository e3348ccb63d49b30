"""Test kit for target-lytics-users: Singer input builders, an in-process runner, sandbox variants."""

from __future__ import annotations

import contextlib
import io
import json
import typing as t

from target_lytics_users.target import TargetLyticsUsers

from sandbox import LyticsSandbox

TOKEN = "sandbox-lytics-token"

BRAZE_USERS_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        "braze_id": {"type": "string"},
        "external_id": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "first_name": {"type": ["string", "null"]},
        "last_name": {"type": ["string", "null"]},
        "phone_number": {"type": ["string", "null"]},
        "country": {"type": ["string", "null"]},
        "city": {"type": ["string", "null"]},
        "language": {"type": ["string", "null"]},
        "gender": {"type": ["string", "null"]},
        "date_of_birth": {"type": ["string", "null"], "format": "date"},
        "time_zone": {"type": ["string", "null"]},
        "last_used_app_date": {"type": ["string", "null"], "format": "date-time"},
        "total_revenue": {"type": ["number", "null"]},
        "sessions": {"type": ["integer", "null"]},
        "email_subscribe": {"type": ["boolean", "null"]},
        "custom_attributes": {"type": ["object", "null"]},
        "segments": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}


def braze_user(i: int, **extra: t.Any) -> dict[str, t.Any]:
    """One braze_users record in the webhook body's field names."""
    rec: dict[str, t.Any] = {
        "braze_id": f"b{i:06d}",
        "external_id": f"u{i}",
        "email": f"user{i}@example.com",
        "first_name": "Zoë",
        "last_name": f"Name{i}",
        "phone_number": f"+3361234{i:04d}",
        "country": "FR",
        "city": "Paris",
        "language": "fr",
        "gender": "F",
        "date_of_birth": "1990-05-17",
        "time_zone": "Europe/Paris",
        "last_used_app_date": "2024-03-01T10:20:30Z",
        "total_revenue": 12.5,
        "sessions": i,
        "email_subscribe": True,
        "custom_attributes": {"tier": "gold", "scores": [1, 2, {"x": None}]},
        "segments": ["a", "b"],
    }
    rec.update(extra)
    return rec


def singer_lines(
    records: t.Iterable[dict[str, t.Any]],
    *,
    stream: str = "braze_users",
    schema: dict[str, t.Any] | None = None,
    key_properties: list[str] | None = None,
    state_every: int | None = None,
    final_state: bool = True,
) -> list[str]:
    """SCHEMA, RECORDs (with STATE {"n": count} every `state_every` records and at the end)."""
    lines = [
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": stream,
                "schema": schema or BRAZE_USERS_SCHEMA,
                "key_properties": key_properties if key_properties is not None else ["braze_id"],
            }
        )
    ]
    n = 0
    for rec in records:
        lines.append(json.dumps({"type": "RECORD", "stream": stream, "record": rec}))
        n += 1
        if state_every and n % state_every == 0:
            lines.append(json.dumps({"type": "STATE", "value": {"n": n}}))
    if final_state:
        lines.append(json.dumps({"type": "STATE", "value": {"n": n, "done": True}}))
    return lines


class RunResult(t.NamedTuple):
    """Output of an in-process run."""

    target: TargetLyticsUsers
    states: list[dict[str, t.Any]]
    error: BaseException | None


def run_target(config: dict[str, t.Any], lines: list[str]) -> RunResult:
    """Run the target in-process on `lines`; STATE lines are parsed from the captured stdout."""
    target = TargetLyticsUsers(config=config)
    out = io.StringIO()
    error: BaseException | None = None
    with contextlib.redirect_stdout(out):
        try:
            target.listen(file_input=io.StringIO("\n".join(lines) + "\n"))
        except Exception as exc:
            error = exc
    states = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return RunResult(target, states, error)


class RejectingLyticsSandbox(LyticsSandbox):
    """Lytics emulator that rejects records carrying `"_reject": true` (counted in rejected_count)."""

    def _collect(self, req: t.Any, stream: str) -> t.Any:
        import orjson

        data = orjson.loads(req.body)
        if isinstance(data, list):
            data = [None if isinstance(r, dict) and r.get("_reject") else r for r in data]
            req.body = orjson.dumps(data)
        return super()._collect(req, stream)


class PoisonLyticsSandbox(LyticsSandbox):
    """Lytics emulator answering 500 (nothing stored) to any body holding `"poison": true`."""

    def _collect(self, req: t.Any, stream: str) -> t.Any:
        if b'"poison":true' in req.body:
            return self.error(500, "internal error")
        return super()._collect(req, stream)
