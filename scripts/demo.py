"""`make demo`: both directions against the local Braze and Lytics sandbox, with run summaries.

Starts the two emulators on the ports the `sandbox` environment of meltano.yml points at, seeds
them with a few audiences over tens of thousands of users and a Braze CSV export, then runs
`meltano run` for both directions, changes some memberships and runs again to show that only the
deltas are sent; finally the `braze-to-lytics` job triggers a REST segment export on the Braze
sandbox and loads users and campaign/Canvas engagement into Lytics with no manual step.
Nothing leaves this machine and no Braze data point is spent.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tap_braze_csv.sample import generate_export, sample_profiles

from sandbox import BrazeSandbox, LyticsSandbox

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".meltano" / "demo"
MELTANO = str(Path(sys.executable).parent / "meltano")
LYTICS_PORT, BRAZE_PORT = 8791, 8790  # the sandbox environment of meltano.yml
USERS = 40_000


def say(text: str = "") -> None:
    print(text, flush=True)


def members(ids, without_id=()) -> list[dict]:
    return [
        {"_uid": f"lu{i}", "email": f"user{i}@example.com"}
        | ({} if i in without_id else {"braze_id": f"user{i}"})
        for i in sorted(ids)
    ]


def meltano(
    env: dict[str, str], *args: str, expect_failure: bool = False
) -> subprocess.CompletedProcess[str]:
    started = time.perf_counter()
    proc = subprocess.run([MELTANO, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if (proc.returncode != 0) != expect_failure:
        say(proc.stderr[-6000:])
        raise SystemExit(f"`meltano {' '.join(args)}` exited {proc.returncode}")
    outcome = f"failed (exit {proc.returncode}), as expected" if expect_failure else "finished"
    say(f"  `meltano {' '.join(args)}` {outcome} in {elapsed:.1f}s")
    shown = set()
    for line in proc.stderr.splitlines():
        text = line.split("] ", 1)[-1].strip()
        wanted = (
            "ummary" in line
            or "Braze rejected user" in line
            or "kept: " in line
            or "max_removal_fraction" in line
        )
        if wanted and text not in shown:  # meltano may echo a plugin's error line
            shown.add(text)
            say("    " + text)
    return proc


def braze_memberships(braze: BrazeSandbox) -> dict[str, set[str]]:
    return {
        uid: set(a["lytics_segments"])
        for uid, a in braze.users().items()
        if a.get("lytics_segments")
    }


def lytics_to_braze(
    env, braze, audiences: dict[str, set[int]], label: str, expect_failure: bool = False
) -> None:
    before = braze_memberships(braze)
    stats0 = dict(braze.stats)
    meltano(
        env, "run", "tap-lytics-audience", "target-braze-audience", expect_failure=expect_failure
    )
    after = braze_memberships(braze)
    added = sum(len(after.get(u, set()) - before.get(u, set())) for u in after)
    removed = sum(len(before[u] - after.get(u, set())) for u in before)
    total = sum(len(ids) for ids in audiences.values())
    requests = braze.stats["requests"] - stats0.get("requests", 0)
    points = braze.stats["data_points"] - stats0.get("data_points", 0)
    rejected = braze.stats["errors"] - stats0.get("errors", 0)
    say(
        f"  {label}: added {added:,}, removed {removed:,}, unchanged {total - added:,}, rejected {rejected:,}"
    )
    say(
        f"  Braze requests {requests:,}, data points {points:,}; resending every membership would cost "
        f"{total:,} data points ({total - points:,} saved)"
    )


def s3_server_module():
    """The test suite's S3-compatible server helper (moto's standalone server on loopback)."""
    import importlib.util

    path = ROOT / "tap-braze-csv" / "tests" / "s3_server.py"
    spec = importlib.util.spec_from_file_location("demo_s3_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bucket_export(env: dict[str, str], braze: BrazeSandbox, lytics: LyticsSandbox) -> None:
    """The same job when the workspace writes exports to its own bucket (S3-compatible server)."""
    say(
        "\n== The same job when the Braze workspace writes exports to its S3 bucket: no download "
        "URL, the tap waits for the files under segment-export/<segment>/<date>/<object_prefix>/"
    )
    server = s3_server_module().start_s3_server()
    try:
        bucket = server.new_bucket("braze-exports")
        braze.segment_exports.bucket = f"s3://{bucket}"
        braze.segment_exports.storage_options = {
            "key": server.access_key,
            "secret": server.secret_key,
            "client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        }
        braze.add_segment("vip-users", [f"user{i}" for i in range(0, USERS, 8)])
        bucket_env = {
            **env,
            **server.env(),  # AWS_ENDPOINT_URL and keys: the standard AWS credential chain
            "TAP_BRAZE_REST_EXPORT_REST_EXPORT_BUCKET_URL": f"s3://{bucket}",
            "TAP_BRAZE_REST_EXPORT_REST_EXPORT_SEGMENT_IDS": '["vip-users"]',
        }
        users_before = len(lytics.collected("braze_users"))
        exports_before = braze.stats["exports"]
        meltano(bucket_env, "run", "braze-to-lytics")
        keys = [
            o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        ]
        say(
            f"  Braze exports requested: {braze.stats['exports'] - exports_before}; files in the "
            f"bucket: {len(keys)} (e.g. {keys[0] if keys else '-'}); Lytics braze_users received "
            f"{len(lytics.collected('braze_users')) - users_before:,} users"
        )
    finally:
        server.stop()
        braze.segment_exports.bucket = None


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "exports").mkdir(parents=True)
    env = {
        **os.environ,
        "MELTANO_ENVIRONMENT": "sandbox",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_DATABASE_URI": f"sqlite:///{DEMO / 'meltano.db'}",
        "TARGET_BRAZE_AUDIENCE_STORE_URL": str(DEMO / "store.sqlite"),
        "TAP_BRAZE_CSV_PATHS": f'["{DEMO}/exports/*"]',
    }
    say("Installing the four plugins into .meltano/ (uv backend)...")
    subprocess.run([MELTANO, "install"], cwd=ROOT, env=env, check=True, capture_output=True)

    rng = random.Random(42)
    everyone = range(USERS)
    audiences = {
        "high_value": set(range(0, 8_000)),
        "cart_abandoners": set(rng.sample(everyone, 12_000)),
        "newsletter": set(rng.sample(everyone, 25_000)),
    }
    with (
        LyticsSandbox(api_token="sandbox-lytics-token", port=LYTICS_PORT) as lytics,
        BrazeSandbox(api_key="sandbox-braze-key", port=BRAZE_PORT) as braze,
    ):
        say(f"Lytics sandbox at {lytics.url}, Braze sandbox at {braze.url}")
        for slug, ids in audiences.items():
            lytics.add_audience(slug, name=slug.replace("_", " ").title(), members=members(ids))
        say(
            f"Seeded {len(audiences)} Lytics audiences over {USERS:,} users "
            f"({sum(map(len, audiences.values())):,} memberships)"
        )

        say("\n== Lytics -> Braze, first run (backfill of existing members)")
        lytics_to_braze(env, braze, audiences, "run 1")

        say(
            "\n== Memberships change: 600 users leave high_value, 900 join newsletter, 300 join cart_abandoners"
        )
        audiences["high_value"] -= set(range(0, 600))
        audiences["newsletter"] |= set(
            rng.sample([i for i in everyone if i not in audiences["newsletter"]], 900)
        )
        audiences["cart_abandoners"] |= set(
            rng.sample([i for i in everyone if i not in audiences["cart_abandoners"]], 300)
        )
        for slug, ids in audiences.items():
            lytics.set_members(slug, members(ids))
        say("== Lytics -> Braze, second run (only the deltas; Braze refuses one user)")
        braze.reject({"user7": "provided external_id is blacklisted and disallowed"})
        lytics_to_braze(env, braze, audiences, "run 2")
        braze.reject({})
        say("== Lytics -> Braze, third run (the refused user is delivered now)")
        lytics_to_braze(env, braze, audiences, "run 3")
        say("== Lytics -> Braze, fourth run (nothing changed: nothing sent)")
        lytics_to_braze(env, braze, audiences, "run 4")

        expected = {}
        for slug, ids in audiences.items():
            for i in ids:
                expected.setdefault(f"user{i}", set()).add(slug)
        assert braze_memberships(braze) == expected, "Braze holds exactly the Lytics memberships"
        say("  Braze's lytics_segments match the Lytics audiences exactly.")

        say(
            "\n== Safeguards: 300 newsletter members lose their braze_id in Lytics (still members), "
            "and the high_value scan silently ends after 2,000 of its 7,400 members"
        )
        lost = set(sorted(audiences["newsletter"])[:300])
        lytics.set_members("newsletter", members(audiences["newsletter"], without_id=lost))
        lytics.truncate_scan("high_value", 2_000, report_total=False)
        say(
            "== Lytics -> Braze, fifth run (nobody removed: members without id kept, mass removal held)"
        )
        lytics_to_braze(env, braze, audiences, "run 5", expect_failure=True)
        assert braze_memberships(braze) == expected, "nobody was removed"
        lytics.truncate_scan("high_value", None)
        lytics.set_members("newsletter", members(audiences["newsletter"]))
        say("== Lytics -> Braze, sixth run (the glitch is over: the held removals are not needed)")
        lytics_to_braze(env, braze, audiences, "run 6")
        assert braze_memberships(braze) == expected

        say("\n== Braze -> Lytics: a segment CSV export (zip, as Braze delivers it) and a gzip one")
        generate_export(
            DEMO / "exports" / "segment-active-users-20261128.zip", 20_000, segment="Active Users"
        )
        generate_export(DEMO / "exports" / "segment-vip-20261128.csv.gz", 5_000, segment="VIP")
        meltano(env, "run", "tap-braze-csv", "target-lytics-users")
        collected = lytics.collected("braze_users")
        say(
            f"  Lytics stream braze_users holds {len(collected):,} records; first: "
            f"{ {k: collected[0].get(k) for k in ('braze_id', 'external_id', 'email', 'time_zone')} }"
        )
        meltano(env, "run", "tap-braze-csv", "target-lytics-users")
        say(
            f"  Second run: files already read are skipped; braze_users still holds {len(lytics.collected('braze_users')):,} records"
        )

        say(
            "\n== Braze -> Lytics with no human in the loop: `meltano run braze-to-lytics` triggers "
            "Braze's REST segment export (POST /users/export/segment), waits for the archive, "
            "streams its JSON lines"
        )
        for profile in sample_profiles(USERS, seed=5):
            attrs = dict(profile)
            ext = attrs.pop("external_id")
            existing = braze.user(ext) or {}
            existing.pop("external_id", None)
            braze.add_user(ext, **{**existing, **attrs})
        braze.add_segment("all-users")
        braze.segment_exports.delay = 2.0
        users_before = len(lytics.collected("braze_users"))
        meltano(env, "run", "braze-to-lytics")
        exported = lytics.collected("braze_users")[users_before:]
        engagement = lytics.collected("braze_engagement")
        kinds = {k: sum(1 for e in engagement if e["kind"] == k) for k in ("campaign", "canvas")}
        say(
            f"  Braze exports requested: {braze.stats['exports']}; Lytics braze_users received "
            f"{len(exported):,} users from the JSON export (custom attributes kept: "
            f"{sorted(exported[0].get('custom_attributes') or {})})"
        )
        say(
            f"  Lytics braze_engagement received {len(engagement):,} records "
            f"({kinds['campaign']:,} campaigns, {kinds['canvas']:,} Canvases); first: "
            f"{ {k: engagement[0].get(k) for k in ('external_id', 'kind', 'name', 'last_received', 'opened_email')} }"
        )
        meltano(env, "run", "braze-to-lytics")
        say(
            f"  Second run within rest_export.min_interval_hours: exports requested still "
            f"{braze.stats['exports']}, braze_engagement still {len(lytics.collected('braze_engagement')):,} records"
        )
        bucket_export(env, braze, lytics)
    say("\nSandboxes stopped. Demo complete.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
