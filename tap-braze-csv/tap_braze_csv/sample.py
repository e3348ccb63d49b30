"""Generator of realistic Braze "CSV Export User Data" files, for demos, tests and benchmarks.

``generate_export(path, rows, segment=...)`` writes a file shaped like Braze's export: the
documented User Data columns in the documented order, a few custom attributes, a UTF-8 BOM,
CRLF line ends, quoted cells holding commas, quotes and newlines, JSON-ish ``devices`` and
``user_aliases`` cells, and Braze's CSV-injection guard (``'+1555...``, ``'-12``). The name
decides the container: ``.csv``, ``.csv.gz`` or ``.zip`` (one CSV member named after the
segment). Output is deterministic for a given ``seed``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import random
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Standard columns, in the order of Braze's documentation (legacy "Appboy ID" spelling).
STANDARD_HEADER: tuple[str, ...] = (
    "Appboy ID",
    "country",
    "created_at",
    "devices",
    "date_of_birth",
    "email",
    "unsubscribed_from_emails_at",
    "user_id",
    "first_name",
    "first_session",
    "gender",
    "google_ad_ids",
    "city",
    "IDFAs",
    "IDFVs",
    "language",
    "last_app_version_used",
    "last_name",
    "last_session",
    "number_of_google_ad_ids",
    "number_of_IDFAs",
    "number_of_IDFVs",
    "number_of_push_tokens",
    "number_of_roku_ad_ids",
    "number_of_windows_ad_ids",
    "phone_number",
    "opted_into_push_at",
    "unsubscribed_from_push_at",
    "random_bucket",
    "roku_ad_ids",
    "session_count",
    "timezone",
    "in_app_purchase_total",
    "user_aliases",
    "windows_ad_ids",
)
#: Custom attributes added after the standard columns.
CUSTOM_HEADER: tuple[str, ...] = ("Favorite Color", "loyalty_tier", "Lifetime Value", "notes")

_FIRST = ("Ana", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Gus", "Hiro", "Iris", "José")
_LAST = ("Smith", "O'Brien", "Nguyen", 'Lee "Jr"', "García", "Müller", "Kowalski", "Ito")
_CITIES = (("US", "New York"), ("FR", "Paris"), ("DE", "Berlin"), ("JP", "Tokyo"), ("BR", "Rio"))
_TZ = ("America/New_York", "Europe/Paris", "Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo")
_COLORS = ("red", "green", "blue", "=SUM(A1)", "-", "teal, dark")
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


def _ts(rnd: random.Random) -> str:
    moment = _EPOCH + dt.timedelta(seconds=rnd.randrange(0, 150_000_000))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rnd.randrange(1000):03d}Z"


def iter_rows(rows: int, *, seed: int = 7) -> Iterator[list[str]]:
    """Yield ``rows`` data rows matching ``STANDARD_HEADER + CUSTOM_HEADER``."""
    rnd = random.Random(seed)
    for i in range(rows):
        country, city = rnd.choice(_CITIES)
        first = rnd.choice(_FIRST)
        last = rnd.choice(_LAST)
        idfa = f"{rnd.getrandbits(128):032x}"
        sessions = rnd.randrange(0, 500)
        devices = (
            '[{"model":"iPhone 13","os":"iOS 17.1","carrier":"Verizon",'
            f'"idfv":"{idfa[:8]}","ad_tracking_enabled":true}}]'
        )
        notes = "" if i % 50 else "VIP since 2020,\nprefers email"
        yield [
            f"{0x5F000000_00000000_00000000 + i:024x}",
            country,
            _ts(rnd),
            devices,
            ""
            if i % 7 == 0
            else f"{rnd.randrange(1950, 2006)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
            f"user{i}@example.com",
            "" if i % 3 else _ts(rnd),
            f"ext-{i:08d}",
            first,
            _ts(rnd),
            rnd.choice(("M", "F", "O", "")),
            "",
            city,
            idfa,
            "",
            rnd.choice(("en", "fr", "de", "ja", "pt")),
            f"{rnd.randrange(1, 9)}.{rnd.randrange(10)}.{rnd.randrange(10)}",
            last,
            _ts(rnd),
            "0",
            "1",
            "0",
            str(rnd.randrange(0, 3)),
            "0",
            "0",
            f"'+1555{rnd.randrange(10**7):07d}",
            "" if i % 2 else _ts(rnd),
            "",
            str(rnd.randrange(0, 10000)),
            "",
            str(sessions),
            rnd.choice(_TZ),
            f"{rnd.randrange(0, 100000) / 100:.2f}",
            '[{"alias_name":"crm-' + str(i) + '","alias_label":"crm_id"}]',
            "",
            rnd.choice(_COLORS) if rnd.random() < 0.9 else "'-10",
            rnd.choice(("gold", "silver", "bronze", "")),
            f"{rnd.randrange(0, 5000)}.{rnd.randrange(100):02d}",
            notes,
        ]


def _write_csv(stream: io.TextIOBase, rows: int, seed: int, header: Sequence[str]) -> None:
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(header)
    batch: list[list[str]] = []
    for row in iter_rows(rows, seed=seed):
        batch.append(row)
        if len(batch) >= 5000:
            writer.writerows(batch)
            batch.clear()
    writer.writerows(batch)


def generate_export(
    path: str | Path,
    rows: int,
    *,
    segment: str = "All Users",
    seed: int = 7,
    header: Sequence[str] | None = None,
) -> Path:
    """Write a Braze-like user export of ``rows`` rows to ``path`` and return the path.

    ``.zip`` holds one member ``<segment>.csv``; ``.gz`` is gzip; anything else is a plain
    CSV. Files are UTF-8 with a BOM and CRLF line ends. ``header`` overrides the header row
    (it must keep 39 columns).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cols = list(header or (*STANDARD_HEADER, *CUSTOM_HEADER))
    name = target.name.lower()
    if name.endswith(".zip"):
        with (
            zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf,
            zf.open(f"{segment}.csv", "w", force_zip64=True) as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
        ):
            _write_csv(text, rows, seed, cols)
    elif name.endswith(".gz"):
        with gzip.open(target, "wt", encoding="utf-8-sig", newline="", compresslevel=1) as text:
            _write_csv(text, rows, seed, cols)
    else:
        with target.open("w", encoding="utf-8-sig", newline="") as text:
            _write_csv(text, rows, seed, cols)
    return target


def sample_profiles(users: int, *, seed: int = 7, prefix: str = "user") -> Iterator[dict]:
    """Yield Braze profiles as REST exports show them, for the Braze sandbox's export endpoint.

    Each is ``{"external_id": ..., attributes...}`` with profile fields under their export
    names (``phone``, ``home_city``, ``dob``...), custom attributes, and 90 days of
    ``campaigns_received`` / ``canvases_received`` shaped like Braze's documented sample.
    """
    rnd = random.Random(seed)
    campaigns = [(f"cmp-{i:04d}-0000-4000-8000-{i:012d}", f"Campaign {i}") for i in range(12)]
    canvases = [(f"cnv-{i:04d}-0000-4000-8000-{i:012d}", f"Canvas {i}") for i in range(6)]
    for i in range(users):
        country, city = rnd.choice(_CITIES)
        received = _campaigns_received(rnd, campaigns)
        canvas_rows = _canvases_received(rnd, canvases)
        yield {
            "external_id": f"{prefix}{i}",
            "email": f"{prefix}{i}@example.com",
            "first_name": rnd.choice(_FIRST),
            "last_name": rnd.choice(_LAST),
            "phone": f"+1555{rnd.randrange(10**7):07d}",
            "country": country,
            "home_city": city,
            "language": rnd.choice(("en", "fr", "de", "ja", "pt")),
            "gender": rnd.choice(("M", "F", "O")),
            "dob": f"{rnd.randrange(1950, 2006)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
            "time_zone": rnd.choice(_TZ),
            "created_at": _ts(rnd).replace("T", " ").replace("Z", " UTC"),
            "loyalty_tier": rnd.choice(("gold", "silver", "bronze")),
            "lifetime_value": rnd.randrange(0, 500_000) / 100,
            "campaigns_received": received,
            "canvases_received": canvas_rows,
        }


def _campaigns_received(rnd: random.Random, campaigns: list[tuple[str, str]]) -> list[dict]:
    """Return 0-3 ``campaigns_received`` entries, some opened, clicked or converted."""
    received = []
    for api_id, name in rnd.sample(campaigns, rnd.randrange(0, 4)):
        engaged = {"opened_email": rnd.random() < 0.5}
        if rnd.random() < 0.3:
            engaged["clicked_email"] = True
        received.append(
            {
                "name": name,
                "api_campaign_id": api_id,
                "last_received": _ts(rnd),
                "engaged": engaged,
                "converted": rnd.random() < 0.2,
                "in_control": False,
            }
        )
    return received


def _canvases_received(rnd: random.Random, canvases: list[tuple[str, str]]) -> list[dict]:
    """Return 0-2 ``canvases_received`` entries, each with one step received."""
    return [
        {
            "name": name,
            "api_canvas_id": api_id,
            "last_received_message": _ts(rnd),
            "last_entered": _ts(rnd),
            "variation_name": "Variant 1",
            "in_control": False,
            "last_exited": _ts(rnd),
            "steps_received": [
                {
                    "name": "Step 1",
                    "api_canvas_step_id": f"{api_id}-s1",
                    "last_received": _ts(rnd),
                }
            ],
        }
        for api_id, name in rnd.sample(canvases, rnd.randrange(0, 3))
    ]


def read_export_rows(path: str | Path) -> list[dict[str, str]]:
    """Read back a generated export (any container) with the stdlib: ground truth for tests."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(zf.namelist()[0]).decode("utf-8-sig")
    elif path.suffix == ".gz":
        text = gzip.decompress(path.read_bytes()).decode("utf-8-sig")
    else:
        text = path.read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))
