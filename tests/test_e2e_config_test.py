"""`meltano config test <loader>` checks the connection and never writes into the destination."""

from __future__ import annotations

from pathlib import Path

from e2e_helpers import Meltano

# meltano 4.4.1 ends every *successful* loader test with "ProcessLookupError" and exit code 1:
# LoaderTestService.validate terminates the loader in a `finally` after it has already exited.
# Its verdict is the line logged just before ("Test data was written ...": the loader exited 0
# and printed no error), so that is what these tests read (a failed test also ends that way).
MELTANO_LOADER_OK = "Test data was written to your target system"


def loader_test_passed(proc) -> bool:
    out = proc.stdout + proc.stderr
    if MELTANO_LOADER_OK not in out:
        return False
    return proc.returncode == 0 or "ProcessLookupError" in out


def test_config_test_of_both_targets_leaves_the_destinations_untouched(
    meltano: Meltano, lytics_sandbox, braze_sandbox, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite"
    meltano.set(
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
        TARGET_BRAZE_AUDIENCE_REST_ENDPOINT=braze_sandbox.url,
        TARGET_BRAZE_AUDIENCE_API_KEY=braze_sandbox.api_key,
        TARGET_BRAZE_AUDIENCE_STORE_URL=str(store),
    )
    proc = meltano.run("config", "test", "target-lytics-users")
    assert loader_test_passed(proc), proc.stdout + proc.stderr
    # Meltano's test record never reached a Lytics stream; one dry-run collect checked the token
    assert lytics_sandbox.streams() == []
    (req,) = lytics_sandbox.requests_snapshot()
    assert (req.path, req.query.get("dryrun")) == ("/collect/json/braze_users", "true")

    proc = meltano.run("config", "test", "target-braze-audience")
    assert loader_test_passed(proc), proc.stdout + proc.stderr
    assert braze_sandbox.users() == {}
    assert [r.json for r in braze_sandbox.requests] == [{"attributes": []}]
    assert not store.exists()

    # a wrong token fails the test, naming the setting; still nothing stored
    meltano.set(TARGET_LYTICS_USERS_API_TOKEN="not-the-token")
    # meltano shows the loader's output only at debug level
    proc = meltano.run("--log-level=debug", "config", "test", "target-lytics-users")
    assert proc.returncode != 0
    assert not loader_test_passed(proc)
    assert "check the `api_token` setting" in proc.stdout + proc.stderr
    assert "not-the-token" not in proc.stdout + proc.stderr
    assert lytics_sandbox.streams() == []
