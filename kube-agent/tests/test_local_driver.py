"""The local driver against real PostgreSQL servers on this machine, through its public methods.

The tests look at the documented layout under data_dir (state.json, postmaster.pid) to find pids and replica
ports; everything else goes through the driver or a client connection. They wait on conditions, never for a
fixed time.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg
import pytest
from psycopg import errors
from pydantic import SecretStr

from orochi_agent.drivers.base import DriverError, Refused
from orochi_agent.drivers.local import LocalDriver, binaries
from orochi_agent.drivers.local.accounts import DEFAULT_SERVER_USER, server_account
from orochi_agent.models import DesiredState

T = TypeVar("T")
VERSIONS = LocalDriver(data_dir=Path("/nonexistent")).versions()
NEWEST = VERSIONS[-1] if VERSIONS else "18"
AS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(not VERSIONS, reason="no PostgreSQL installation on this machine")


@pytest.fixture(scope="module")
def root_folder() -> Iterator[Path]:
    """A fresh folder the server user can enter (pytest's tmp_path sits under a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="orochi-local-driver-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def data_dir(root_folder: Path, request: pytest.FixtureRequest) -> Path:
    name: str = request.node.name
    return root_folder / name.replace("[", "-").replace("]", "")


@pytest.fixture
def driver(data_dir: Path) -> Iterator[LocalDriver]:
    driver = LocalDriver(data_dir=data_dir)
    yield driver
    for cluster_id in LocalDriver(data_dir=data_dir).clusters():
        driver.delete(cluster_id)
    driver.close()


def desired(cluster_id: str, *, version: str = NEWEST, instances: int = 2, generation: int = 1,
            password: str = "first p@ss/word", memory_gb: int = 2) -> DesiredState:
    return DesiredState(
        id=cluster_id, org_id="org_test", name="test", region="local", generation=generation, deleting=False,
        postgres_version=version, image=f"postgres:{version}", size="db-s-1vcpu-2gb", vcpu=1, memory_gb=memory_gb,
        instances=instances, storage_gb=10, ip_allowlist=[], database="app", owner="app",
        password=SecretStr(password),
    )


def wait_until(condition: Callable[[], T | None], *, what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def state(data_dir: Path, cluster_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads((data_dir / "clusters" / cluster_id / "state.json").read_text())
    return answer


def port_of(data_dir: Path, cluster_id: str, name: str) -> int:
    port: int = next(i["port"] for i in state(data_dir, cluster_id)["instances"] if i["name"] == name)
    return port


def postmaster_pid(data_dir: Path, cluster_id: str, name: str) -> int:
    return int((data_dir / "clusters" / cluster_id / name / "postmaster.pid").read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what=f"pid {pid} to end")


def connect(port: int, *, password: str = "first p@ss/word", user: str = "app", dbname: str = "app",
            ) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname,
                           connect_timeout=5, autocommit=True)


def one(conn: psycopg.Connection, query: str) -> Any:
    """The first column of the query's one row."""
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return row[0]


def superuser(data_dir: Path, cluster_id: str, name: str) -> psycopg.Connection:
    return connect(port_of(data_dir, cluster_id, name), user="postgres", dbname="postgres",
                   password=state(data_dir, cluster_id)["superuser_password"])


def streaming_slots(data_dir: Path, cluster_id: str) -> dict[str, str | None]:
    with superuser(data_dir, cluster_id, f"{cluster_id}-1") as conn:
        rows = conn.execute("SELECT s.slot_name, r.state FROM pg_replication_slots s"
                            " LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid").fetchall()
    return dict(rows)


@pytest.mark.parametrize("version", VERSIONS)
def test_two_instance_cluster_serves_writes_on_the_primary_and_reads_on_the_replica(
        driver: LocalDriver, data_dir: Path, version: str) -> None:
    driver.apply(desired("c1", version=version))

    seen = driver.observe("c1")
    assert seen is not None
    assert (seen.generation, seen.phase, seen.ready_instances, seen.primary) == (1, "ready", 2, "c1-1")
    assert seen.endpoint is not None and seen.endpoint.host == "127.0.0.1"
    assert driver.clusters() == {"c1": 1}
    with connect(seen.endpoint.port) as primary:
        assert one(primary, "SHOW server_version_num").startswith(version)
        assert one(primary, "SELECT pg_is_in_recovery()") is False
        primary.execute("CREATE TABLE notes AS SELECT 'hello' AS body")
    with connect(port_of(data_dir, "c1", "c1-2")) as replica:
        assert one(replica, "SELECT pg_is_in_recovery()") is True
        wait_until(lambda: one(replica, "SELECT to_regclass('notes')"),
                   what="the write to reach the replica")
        assert replica.execute("SELECT body FROM notes").fetchall() == [("hello",)]
        with pytest.raises(errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO notes VALUES ('nope')")
    # The replica's base backup asked for an immediate checkpoint (`-c fast`), not a spread one that waits for
    # checkpoint_timeout: the primary logs which (log_checkpoints is on by default since PostgreSQL 15).
    checkpoints = [line for line in (data_dir / "clusters" / "c1" / "c1-1.log").read_text().splitlines()
                   if "checkpoint starting:" in line]
    assert any("immediate" in line for line in checkpoints), checkpoints


@pytest.mark.skipif(not AS_ROOT, reason="the agent switches accounts only as root")
def test_as_root_the_servers_run_as_the_unprivileged_user_with_private_files(
        driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))

    account = pwd.getpwnam(DEFAULT_SERVER_USER)
    for name in ("c1-1", "c1-2"):
        postmaster = psutil.Process(postmaster_pid(data_dir, "c1", name))
        family = [postmaster, *postmaster.children(recursive=True)]
        assert len(family) > 3
        assert {p.username() for p in family} == {DEFAULT_SERVER_USER}
        instance_dir = (data_dir / "clusters" / "c1" / name).stat()
        assert (instance_dir.st_uid, stat.S_IMODE(instance_dir.st_mode)) == (account.pw_uid, 0o700)
    state_file = (data_dir / "clusters" / "c1" / "state.json").stat()
    assert (state_file.st_uid, stat.S_IMODE(state_file.st_mode)) == (0, 0o600)


def test_scaling_up_adds_a_streaming_replica_and_down_drops_slots_and_data(
        driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1", instances=2))

    driver.apply(desired("c1", instances=3, generation=2))
    seen = driver.observe("c1")
    assert seen is not None and (seen.generation, seen.phase, seen.ready_instances) == (2, "ready", 3)
    assert streaming_slots(data_dir, "c1") == {"replica_2": "streaming", "replica_3": "streaming"}
    doomed = [postmaster_pid(data_dir, "c1", name) for name in ("c1-2", "c1-3")]

    driver.apply(desired("c1", instances=1, generation=3))
    seen = driver.observe("c1")
    assert seen is not None and (seen.generation, seen.phase, seen.ready_instances) == (3, "ready", 1)
    assert streaming_slots(data_dir, "c1") == {}
    assert not any(alive(pid) for pid in doomed)
    assert not (data_dir / "clusters" / "c1" / "c1-2").exists()
    assert not (data_dir / "clusters" / "c1" / "c1-3").exists()
    assert [i["name"] for i in state(data_dir, "c1")["instances"]] == ["c1-1"]


def test_reapplying_an_applied_state_restarts_nothing_and_writes_nothing(driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))
    files = [data_dir / "clusters" / "c1" / p for p in ("state.json", "c1-1/orochi.conf", "c1-2/orochi.conf")]

    def snapshot() -> tuple[object, ...]:
        with superuser(data_dir, "c1", "c1-1") as conn:
            catalog = conn.execute(
                "SELECT pg_snapshot_xmax(pg_current_snapshot()),"
                " (SELECT array_agg((xmin::text, rolname, rolpassword) ORDER BY rolname) FROM pg_authid),"
                " (SELECT array_agg((xmin::text, datname) ORDER BY datname) FROM pg_database)"
            ).fetchone()
        pids = [postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")]
        return pids, [f.stat().st_mtime_ns for f in files], catalog

    before = snapshot()
    driver.apply(desired("c1"))
    LocalDriver(data_dir=data_dir).apply(desired("c1"))

    assert snapshot() == before


def test_a_changed_password_takes_effect_and_the_old_one_stops_working(driver: LocalDriver) -> None:
    driver.apply(desired("c1", instances=1))

    driver.apply(desired("c1", instances=1, generation=2, password="second password"))

    seen = driver.observe("c1")
    assert seen is not None and seen.endpoint is not None and seen.generation == 2
    with connect(seen.endpoint.port, password="second password") as conn:
        assert one(conn, "SELECT current_user") == "app"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(seen.endpoint.port, password="first p@ss/word")


def test_a_version_it_cannot_serve_is_refused_naming_the_versions_it_serves(driver: LocalDriver) -> None:
    with pytest.raises(Refused) as refused:
        driver.apply(desired("c1", version="11"))

    assert refused.value.message == (
        f"PostgreSQL 11 is not available on this machine's local driver; it serves {', '.join(VERSIONS)}"
    )
    assert refused.value.transient is False
    assert driver.observe("c1") is None
    assert driver.clusters() == {}


@pytest.mark.parametrize("change", [
    {"instances": 0}, {"instances": 10}, {"owner": "postgres"}, {"owner": "pg_monitor"}, {"database": "template1"},
    {"id": "../escape"},
])
def test_states_it_cannot_serve_are_refused_before_anything_is_made(
        driver: LocalDriver, data_dir: Path, change: dict[str, Any]) -> None:
    wanted = desired("c1").model_copy(update=change)

    with pytest.raises(Refused):
        driver.apply(wanted)

    assert driver.clusters() == {}


def test_a_size_change_restarts_every_server_with_the_new_connection_limit(
        driver: LocalDriver, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    driver.apply(desired("c1", instances=2, memory_gb=2))
    before = [postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")]

    driver.apply(desired("c1", instances=2, memory_gb=8, generation=2))

    assert not set(before) & {postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")}
    for name in ("c1-1", "c1-2"):
        with superuser(data_dir, "c1", name) as conn:
            assert one(conn, "SHOW max_connections") == "250"
    seen = driver.observe("c1")
    assert seen is not None and (seen.phase, seen.ready_instances) == ("ready", 2)
    metrics = driver.metrics("c1")
    assert metrics is not None and metrics.max_connections == 250

    driver.apply(desired("c1", instances=2, memory_gb=1, generation=3))
    with superuser(data_dir, "c1", "c1-2") as conn:
        assert one(conn, "SHOW max_connections") == "75"
    assert streaming_slots(data_dir, "c1") == {"replica_2": "streaming"}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_primary_whose_port_was_taken_while_down_moves_and_its_replica_follows(
        driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))
    old_port = port_of(data_dir, "c1", "c1-1")
    kill(postmaster_pid(data_dir, "c1", "c1-1"))

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_until(lambda: _try_bind(squatter, old_port), what="the old port to be free")
        squatter.listen()
        driver.apply(desired("c1"))

        seen = driver.observe("c1")
        assert seen is not None and seen.endpoint is not None
        assert (seen.phase, seen.ready_instances) == ("ready", 2)
        assert seen.endpoint.port != old_port
        assert port_of(data_dir, "c1", "c1-1") == seen.endpoint.port
        assert streaming_slots(data_dir, "c1") == {"replica_2": "streaming"}


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


AGENT = textwrap.dedent("""
    import json, logging, sys, time
    from pathlib import Path
    from orochi_agent.drivers.local import LocalDriver
    from orochi_agent.models import DesiredState
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    LocalDriver(data_dir=Path(sys.argv[1])).apply(DesiredState(**json.loads(sys.stdin.readline())))
    print("applied", flush=True)
    time.sleep(600)
""")


def run_agent_until(data_dir: Path, wanted: DesiredState, *, line_starts: str) -> None:
    """Apply `wanted` in another agent process and SIGKILL that process once it logs a line starting so."""
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(data_dir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdin is not None and agent.stdout is not None
    try:
        agent.stdin.write(json.dumps({**wanted.model_dump(mode="json"), "password": "first p@ss/word"}) + "\n")
        agent.stdin.close()
        for line in agent.stdout:
            if line.startswith(line_starts):
                return
        raise AssertionError(f"the agent ended without logging {line_starts!r}")
    finally:
        agent.kill()
        agent.wait()
        agent.stdout.close()


def test_servers_outlive_a_killed_agent_and_a_new_driver_adopts_them(data_dir: Path, driver: LocalDriver) -> None:
    run_agent_until(data_dir, desired("c1"), line_starts="applied")
    pids = [postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")]

    assert all(alive(pid) for pid in pids)
    assert driver.clusters() == {"c1": 1}
    seen = driver.observe("c1")
    assert seen is not None and (seen.phase, seen.ready_instances) == ("ready", 2)
    driver.apply(desired("c1"))
    assert [postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")] == pids


def test_an_apply_killed_midway_leaves_generation_0_and_the_next_apply_finishes_it(
        data_dir: Path, driver: LocalDriver) -> None:
    run_agent_until(data_dir, desired("c1"), line_starts="started c1-1")

    assert driver.clusters() == {"c1": 0}
    seen = driver.observe("c1")
    assert seen is not None and (seen.generation, seen.phase) == (0, "provisioning")

    driver.apply(desired("c1"))
    seen = driver.observe("c1")
    assert seen is not None and (seen.generation, seen.phase, seen.ready_instances) == (1, "ready", 2)
    assert driver.clusters() == {"c1": 1}


def test_a_killed_primary_is_restarted_on_its_port_with_its_data(driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))
    port = port_of(data_dir, "c1", "c1-1")
    with connect(port) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    killed = postmaster_pid(data_dir, "c1", "c1-1")

    kill(killed)
    down = wait_until(lambda: o if (o := driver.observe("c1")) and o.ready_instances == 0 else None,
                      what="observe to see the primary down")
    assert down.phase == "provisioning" and "c1-1 does not answer" in (down.message or "")
    LocalDriver(data_dir=data_dir).apply(desired("c1"))

    seen = driver.observe("c1")
    assert seen is not None and (seen.phase, seen.ready_instances) == ("ready", 2)
    assert seen.endpoint is not None and seen.endpoint.port == port
    assert postmaster_pid(data_dir, "c1", "c1-1") != killed
    with connect(port) as conn:
        assert one(conn, "SELECT answer FROM kept") == 42


def test_observe_sees_a_killed_replica_as_degraded_until_apply_restarts_it(
        driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1", instances=3))

    kill(postmaster_pid(data_dir, "c1", "c1-3"))
    down = wait_until(lambda: o if (o := driver.observe("c1")) and o.ready_instances < 3 else None,
                      what="observe to see the replica down")
    assert (down.phase, down.ready_instances, down.primary) == ("degraded", 2, "c1-1")
    assert down.message == "c1-3 does not answer"

    driver.apply(desired("c1", instances=3))
    seen = driver.observe("c1")
    assert seen is not None and (seen.phase, seen.ready_instances, seen.message) == ("ready", 3, None)


def test_delete_stops_every_server_and_removes_the_data(driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))
    pids = [postmaster_pid(data_dir, "c1", name) for name in ("c1-1", "c1-2")]
    family = [p.pid for pid in pids for p in psutil.Process(pid).children(recursive=True)]

    assert driver.delete("c1") is True

    assert not any(alive(pid) for pid in pids + family)
    assert not (data_dir / "clusters" / "c1").exists()
    assert driver.observe("c1") is None
    assert driver.metrics("c1") is None
    assert driver.clusters() == {}
    assert driver.delete("c1") is True
    assert driver.delete("never-existed") is True


def test_metrics_come_from_the_real_servers(driver: LocalDriver, data_dir: Path) -> None:
    driver.apply(desired("c1"))
    port = port_of(data_dir, "c1", "c1-1")

    first = driver.metrics("c1")
    with connect(port) as client:
        client.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        for _ in range(20):
            client.execute("SELECT count(*) FROM t")
        second = driver.metrics("c1")

    assert first is not None and second is not None
    assert first.transactions_per_second is None and first.cpu_percent is None
    assert first.connections is not None and second.connections == first.connections + 1
    assert second.max_connections == 100
    assert second.transactions_per_second is not None and second.transactions_per_second >= 0
    assert second.cpu_percent is not None and 0 <= second.cpu_percent <= 100
    assert second.memory_percent is not None and 0 < second.memory_percent <= 100
    assert second.database_size_gb is not None and 0 < second.database_size_gb < 1
    assert second.storage_used_gb is not None and 0 < second.storage_used_gb < 1
    assert second.storage_used_percent is not None and 0 < second.storage_used_percent < 10
    assert second.replication_lag_seconds is not None and second.replication_lag_seconds >= 0

    tiny = LocalDriver(data_dir=data_dir, storage_bytes_per_gb=1024).metrics("c1")
    assert tiny is not None and tiny.storage_used_percent == 100
    assert tiny.storage_used_gb is not None and tiny.storage_used_gb > 1000


def test_replicas_do_not_add_up_in_the_resource_figures(driver: LocalDriver, data_dir: Path) -> None:
    """Each instance is a pod of the size with its own volume: the figures are the busiest instance's and the fullest
    volume's, so scaling out neither multiplies them nor trips the autoscaler's storage and CPU thresholds."""
    driver.apply(desired("c1", instances=1))
    one = driver.metrics("c1")
    driver.apply(desired("c1", instances=3, generation=2))
    three = driver.metrics("c1")
    assert one is not None and three is not None
    assert one.storage_used_gb is not None and three.storage_used_gb is not None
    # Three volumes of at least one each would sum to 3x; the primary's alone grows only by the WAL the base
    # backups and the slots keep (about 1.5x here).
    assert three.storage_used_gb < 2 * one.storage_used_gb, (one, three)
    # Likewise the primary's memory grows only by its WAL senders (about 1.6x), where the sum was about 3.5x.
    assert one.memory_percent is not None and three.memory_percent is not None
    assert three.memory_percent < 2.5 * one.memory_percent, (one, three)


def test_ping_passes_and_close_can_stop_every_server(data_dir: Path) -> None:
    driver = LocalDriver(data_dir=data_dir, stop_servers_on_close=True)
    driver.ping()
    driver.apply(desired("c1", instances=1))
    pid = postmaster_pid(data_dir, "c1", "c1-1")

    driver.close()

    assert not alive(pid)
    assert LocalDriver(data_dir=data_dir).delete("c1") is True


@pytest.mark.skipif(not AS_ROOT, reason="root can enter every folder itself")
def test_a_data_dir_the_server_user_cannot_enter_fails_ping_and_apply_naming_the_folder(root_folder: Path) -> None:
    locked = root_folder / "locked"
    locked.mkdir(mode=0o700)
    driver = LocalDriver(data_dir=locked / "data")

    with pytest.raises(DriverError, match=re.escape(f"cannot enter {locked}")):
        driver.ping()
    with pytest.raises(DriverError, match=re.escape(f"cannot enter {locked}")) as failed:
        driver.apply(desired("c1"))
    assert failed.value.transient is False


@pytest.mark.skipif(not AS_ROOT, reason="only root's servers run as another account")
def test_an_installation_the_server_user_cannot_reach_is_copied_once(root_folder: Path) -> None:
    installation = next(iter(binaries.find_installations().values()))
    hidden = root_folder / "hidden"
    hidden.mkdir(mode=0o700)
    for part in installation.parts:
        if (installation.root / part).exists():
            shutil.copytree(installation.root / part, hidden / "root" / part, symlinks=True)
    unreachable = binaries.Installation(
        major=installation.major, version=installation.version, root=hidden / "root", parts=installation.parts,
        bin_dir=hidden / "root" / installation.bin_dir.relative_to(installation.root),
    )
    account = server_account(None)

    copy = binaries.reachable(unreachable, account=account, runtime_dir=root_folder / "runtime")

    assert copy.bin_dir.is_relative_to(root_folder / "runtime" / installation.major)
    target = root_folder / "initdb-check"
    target.mkdir(mode=0o700)
    account.own(target)
    done = subprocess.run([copy.tool("initdb"), "-D", str(target), "-N", "--locale=C"], capture_output=True,
                          text=True, **account.process_options())
    assert done.returncode == 0, done.stderr
    assert binaries.reachable(unreachable, account=account, runtime_dir=root_folder / "runtime") == copy
