"""The `local` driver: each cluster is real PostgreSQL servers on this machine, a primary and streaming replicas.

The servers use a fast configuration: fsync and full-page writes are off, so a commit survives a server crash but
not a crash of the machine. It suits a developer's machine and tests, not production data.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import psutil
from psycopg import Connection

from orochi_agent.drivers.base import DriverError, Observation, ObservedPhase, Refused
from orochi_agent.drivers.local import binaries, passwords, ports, sql
from orochi_agent.drivers.local.accounts import Account, server_account
from orochi_agent.drivers.local.binaries import Installation
from orochi_agent.drivers.local.metrics import Measured, Sampler, Size
from orochi_agent.drivers.local.server import PortTaken, Server
from orochi_agent.drivers.local.state import ClusterState, Instance, Layout, Store
from orochi_agent.drivers.sizing import max_connections
from orochi_agent.models import DesiredState, Endpoint, MetricValues

START_TIMEOUT_SECONDS = 60.0
STREAM_TIMEOUT_SECONDS = 60.0
SLOT_RELEASE_SECONDS = 10.0
MAX_INSTANCES = 9
"""max_wal_senders is 10: 8 streaming replicas plus the 2 senders pg_basebackup uses to make the last one."""
_PORT_ATTEMPTS = 5
_POLL_SECONDS = 0.01
_RESERVED_ROLES = frozenset({sql.SUPERUSER, sql.REPLICATION_ROLE})
_RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
_NAME_BYTES = 63

log = logging.getLogger("orochi_agent.local")


def server_settings(*, instance: str, memory_gb: int) -> dict[str, str]:
    """Every server's settings file. wal_retrieve_retry_interval is short so a replica streams again within
    a moment of its primary's restart."""
    return {
        "listen_addresses": ports.HOST,
        "unix_socket_directories": "",
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "on",
        "shared_buffers": "16MB",
        "max_connections": str(max_connections(memory_gb)),
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "hot_standby": "on",
        "wal_retrieve_retry_interval": "200ms",
        "cluster_name": instance,
    }


class LocalDriver:
    """Clusters of PostgreSQL servers on this machine, everything under `data_dir`.

    Servers outlive the driver: a new driver on the same `data_dir` adopts those still running and starts the
    others. `storage_bytes_per_gb` is what one GB of a cluster's `storage_gb` means for its storage metrics.
    """

    name = "local"

    def __init__(self, *, data_dir: Path, server_user: str | None = None, storage_bytes_per_gb: int = 2**30,
                 stop_servers_on_close: bool = False) -> None:
        self._layout = Layout(Path(data_dir).resolve())
        self._store = Store(self._layout)
        self._server_user = server_user
        self._stop_servers_on_close = stop_servers_on_close
        self._sampler = Sampler(storage_bytes_per_gb=storage_bytes_per_gb)
        self._lock = threading.Lock()
        self._cluster_locks: dict[str, threading.Lock] = {}
        self._found: dict[str, Installation] | None = None
        self._usable: dict[str, Installation] = {}
        self._account: Account | None = None
        self._servers: dict[Path, Server] = {}

    def versions(self) -> tuple[str, ...]:
        return tuple(self._installations())

    def apply(self, desired: DesiredState) -> None:
        served = self.versions()
        if desired.postgres_version not in served:
            raise Refused(
                f"PostgreSQL {desired.postgres_version} is not available on this machine's local driver; "
                f"it serves {', '.join(served) or 'no version'}"
            )
        _check_servable(desired)
        with self._cluster_lock(desired.id):
            started = time.monotonic()
            self._prepare()
            try:
                self._apply(desired, self._installation(desired.postgres_version))
            except sql.Error as e:
                raise DriverError(f"cluster {desired.id}: PostgreSQL answered {_first_line(e)}") from e
            except (OSError, psutil.Error) as e:
                raise DriverError(f"cluster {desired.id}: {_first_line(e)}") from e
            log.info("applied cluster %s generation %d (%d instances) in %.0f ms", desired.id, desired.generation,
                     desired.instances, (time.monotonic() - started) * 1000)

    def delete(self, cluster_id: str) -> bool:
        try:
            folder = self._layout.cluster_dir(cluster_id)
        except Refused:
            return True
        with self._cluster_lock(cluster_id):
            if not folder.exists():
                return True
            for name in self._instance_names(cluster_id):
                self._server(cluster_id, name).stop()
            self._store.remove(cluster_id)
            with self._lock:
                for path in [p for p in self._servers if p.parent == folder]:
                    del self._servers[path]
            self._sampler.forget(cluster_id)
        log.info("deleted cluster %s", cluster_id)
        return True

    def observe(self, cluster_id: str) -> Observation | None:
        if not self._holds(cluster_id):
            return None
        state = self._store.load(cluster_id)
        if state is None:
            return Observation(generation=0, phase="provisioning", ready_instances=0)
        primary = state.primary
        if primary is None:
            return Observation(generation=state.generation, phase="provisioning", ready_instances=0,
                               message="the primary is being created")
        endpoint = Endpoint(host=ports.HOST, port=primary.port)
        if not self._server(cluster_id, primary.name).initialized:
            return Observation(generation=state.generation, phase="failed", ready_instances=0, primary=primary.name,
                               endpoint=endpoint, message=f"the data directory of the primary {primary.name} is gone")
        ready, problems = self._ready(state)
        wanted = state.desired_instances or len(state.instances)
        phase: ObservedPhase
        if state.generation > 0 and ready >= wanted:
            phase = "ready"
        elif state.generation > 0 and ready > 0:
            phase = "degraded"
        else:
            phase = "provisioning"
        message = "; ".join(problems)[:1000] or None
        return Observation(generation=state.generation, phase=phase, ready_instances=ready, primary=primary.name,
                           endpoint=endpoint, message=message)

    def clusters(self) -> dict[str, int]:
        return {cluster_id: self._store.generation(cluster_id) for cluster_id in self._layout.cluster_ids()}

    def metrics(self, cluster_id: str) -> MetricValues | None:
        """A sample of the cluster's metrics (see `metrics.py` for their units); None when none of its servers runs."""
        state = self._state_if_held(cluster_id)
        if state is None or state.primary is None:
            return None
        servers = [self._server(cluster_id, instance.name) for instance in state.instances]
        measured = [Measured(name=server.name, processes=server.processes(), data_dir=server.data_dir)
                    for server in servers]
        activity = lag = None
        try:
            with self._connect(state.primary, state) as conn:
                activity = sql.activity(conn, database=state.database)
                if state.replicas:
                    lags = [s.replay_lag_seconds or 0.0 for s in sql.streams(conn).values() if s.state is not None]
                    lag = max(lags) if lags else None
        except sql.Error:
            if not any(server.processes for server in measured):
                return None
        return self._sampler.sample(
            cluster_id, activity=activity, lag_seconds=lag, servers=measured,
            size=Size(vcpu=state.vcpu, memory_gb=state.memory_gb, storage_gb=state.storage_gb),
        )

    def ping(self) -> None:
        if not self.versions():
            raise DriverError(
                "no PostgreSQL installation with initdb, postgres and pg_basebackup was found", transient=False
            )
        self._prepare()

    def close(self) -> None:
        if self._stop_servers_on_close:
            for cluster_id in self._layout.cluster_ids():
                with self._cluster_lock(cluster_id):
                    for name in self._instance_names(cluster_id):
                        self._server(cluster_id, name).stop()
        with self._lock:
            self._servers.clear()

    # Applying

    def _apply(self, desired: DesiredState, installation: Installation) -> None:
        cluster_id = desired.id
        state = self._store.load(cluster_id)
        if state is None:
            state = ClusterState(version=desired.postgres_version, superuser_password=passwords.generate(),
                                 replication_password=passwords.generate())
            self._store.create(cluster_id, state)
        elif state.version != desired.postgres_version:
            raise Refused(f"the local driver cannot upgrade cluster {cluster_id} from PostgreSQL {state.version} "
                          f"to {desired.postgres_version}")
        limit, running_limit = max_connections(desired.memory_gb), max_connections(state.memory_gb)
        existing = [i for i in state.instances if _index(i.name) <= desired.instances]
        # A replica's max_connections may never be lower than its primary's: replicas go first when it grows.
        for instance in sorted(existing, key=lambda i: (i.role == "primary") == (limit > running_limit)):
            settle = instance.role == "replica" and limit < running_limit
            self._keep_running(state, instance, desired, installation, settle=settle)
        if state.primary is None:
            self._create_primary(state, desired, installation)
        primary = state.primary
        assert primary is not None
        with self._connect(primary, state) as conn:
            if sql.in_recovery(conn):
                raise DriverError(f"the primary {primary.name} is in recovery")
            self._ensure_app(conn, state, desired)
            for index in range(2, desired.instances + 1):
                if state.instance(f"{cluster_id}-{index}") is None:
                    self._create_replica(conn, state, desired, installation, index)
            for replica in sorted(state.replicas, key=lambda i: -_index(i.name)):
                if _index(replica.name) > desired.instances:
                    self._remove_replica(conn, state, cluster_id, replica)
            self._wait_streaming(conn, state)
        state.generation = desired.generation
        state.desired_instances = desired.instances
        state.vcpu, state.memory_gb, state.storage_gb = desired.vcpu, desired.memory_gb, desired.storage_gb
        self._store.save(cluster_id, state)

    def _keep_running(self, state: ClusterState, instance: Instance, desired: DesiredState,
                      installation: Installation, *, settle: bool) -> None:
        """Start the instance if it is down, restart it if its settings changed; adopt it as it is otherwise.

        A replica that cannot start is dropped from the state, to be made again from the primary.
        """
        server = self._server(desired.id, instance.name, installation)
        if not server.initialized:
            if instance.role == "primary":
                raise DriverError(f"the data directory of the primary {instance.name} is gone", transient=False)
            self._forget_replica(state, desired.id, instance, server, reason="its data directory is gone")
            return
        server.configure(server_settings(instance=instance.name, memory_gb=desired.memory_gb))
        if server.postmaster() is not None:
            running_port = server.running_port()
            if running_port is not None and running_port != instance.port:
                instance.port = running_port
                self._store.save(desired.id, state)
            if not server.settings_pending():
                return
            log.info("restarting %s: its settings changed", instance.name)
            if settle:
                self._settle(state, instance)
            server.stop()
        try:
            instance.port = self._start(server, state, preferred=instance.port)
        except DriverError as e:
            if instance.role == "primary":
                raise
            self._forget_replica(state, desired.id, instance, server, reason=f"it could not start ({e.message})")
            return
        self._store.save(desired.id, state)

    def _forget_replica(self, state: ClusterState, cluster_id: str, replica: Instance, server: Server, *,
                        reason: str) -> None:
        log.warning("making the replica %s again from the primary: %s", replica.name, reason)
        server.stop()
        state.instances.remove(replica)
        self._store.save(cluster_id, state)

    def _settle(self, state: ClusterState, replica: Instance) -> None:
        """Before a replica restarts with a lower max_connections: let it replay the primary's WAL up to now, then
        make a restartpoint, so that it never replays the primary's older, higher setting again (it would abort)."""
        primary = state.primary
        assert primary is not None and replica.slot is not None
        self._point_at_primary(state, replica, primary)
        deadline = time.monotonic() + STREAM_TIMEOUT_SECONDS
        try:
            with self._connect(primary, state) as conn:
                lsn = sql.current_lsn(conn)
                while not sql.replayed(conn, slot=replica.slot, lsn=lsn):
                    if time.monotonic() > deadline:
                        return
                    time.sleep(_POLL_SECONDS)
            with self._connect(replica, state) as conn:
                sql.checkpoint(conn)
        except sql.Error as e:
            log.warning("could not settle %s before its restart: %s", replica.name, _first_line(e))

    def _create_primary(self, state: ClusterState, desired: DesiredState, installation: Installation) -> None:
        name = f"{desired.id}-1"
        server = self._server(desired.id, name, installation)
        server.stop()
        server.initdb(superuser_password=state.superuser_password)
        server.configure(server_settings(instance=name, memory_gb=desired.memory_gb))
        port = self._start(server, state, preferred=None)
        state.instances.insert(0, Instance(name=name, port=port, role="primary"))
        self._store.save(desired.id, state)

    def _ensure_app(self, conn: Connection, state: ClusterState, desired: DesiredState) -> None:
        """The owner role with the desired password, owning the app database; writes only what differs."""
        password = desired.password.get_secret_value()
        sql.ensure_login_role(conn, role=sql.REPLICATION_ROLE, password=state.replication_password,
                              set_password=False, replication=True)
        same_password = state.owner == desired.owner and passwords.matches(password, state.owner_password_digest)
        if sql.ensure_login_role(conn, role=desired.owner, password=password, set_password=not same_password):
            log.info("set the password of role %s in cluster %s", desired.owner, desired.id)
        sql.ensure_database(conn, name=desired.database, owner=desired.owner)
        if not same_password:
            state.owner, state.owner_password_digest = desired.owner, passwords.digest(password)
        state.database = desired.database
        self._store.save(desired.id, state)

    def _create_replica(self, conn: Connection, state: ClusterState, desired: DesiredState,
                        installation: Installation, index: int) -> None:
        primary = state.primary
        assert primary is not None
        name, slot = f"{desired.id}-{index}", f"replica_{index}"
        server = self._server(desired.id, name, installation)
        server.stop()
        self._drop_slot(conn, slot)
        server.basebackup(primary_port=primary.port, slot=slot, password=state.replication_password)
        server.configure(server_settings(instance=name, memory_gb=desired.memory_gb))
        port = self._start(server, state, preferred=None)
        state.instances.append(Instance(name=name, port=port, role="replica", slot=slot))
        self._store.save(desired.id, state)

    def _remove_replica(self, conn: Connection, state: ClusterState, cluster_id: str,
                        replica: Instance) -> None:
        server = self._server(cluster_id, replica.name)
        server.stop()
        if replica.slot is not None:
            self._drop_slot(conn, replica.slot)
        if server.data_dir.exists():
            shutil.rmtree(server.data_dir)
        server.log_path.unlink(missing_ok=True)
        state.instances.remove(replica)
        self._store.save(cluster_id, state)
        with self._lock:
            self._servers.pop(server.data_dir, None)
        log.info("removed replica %s and its slot", replica.name)

    def _drop_slot(self, conn: Connection, slot: str) -> None:
        """Drop `slot`, waiting for the walsender of a replica just stopped to let it go."""
        deadline = time.monotonic() + SLOT_RELEASE_SECONDS
        while True:
            try:
                sql.drop_slot(conn, slot)
                return
            except sql.Error as e:
                if time.monotonic() > deadline:
                    raise DriverError(f"the replication slot {slot} stayed in use") from e
                time.sleep(_POLL_SECONDS)

    def _wait_streaming(self, conn: Connection, state: ClusterState) -> None:
        """Return once every replica streams from the primary; point a replica at the primary's port if it moved."""
        primary = state.primary
        assert primary is not None
        deadline = time.monotonic() + STREAM_TIMEOUT_SECONDS
        checked: set[str] = set()
        while True:
            streams = sql.streams(conn)
            waiting = [r for r in state.replicas if not _streams(r, streams)]
            if not waiting:
                return
            for replica in waiting:
                if replica.name not in checked:
                    checked.add(replica.name)
                    self._point_at_primary(state, replica, primary)
            if time.monotonic() > deadline:
                names = ", ".join(r.name for r in waiting)
                raise DriverError(f"{names} did not stream from the primary within {STREAM_TIMEOUT_SECONDS:.0f} s")
            time.sleep(_POLL_SECONDS)

    def _point_at_primary(self, state: ClusterState, replica: Instance, primary: Instance) -> None:
        try:
            with self._connect(replica, state) as conn:
                if sql.primary_port(conn) != primary.port:
                    log.info("pointing %s at the primary's port %d", replica.name, primary.port)
                    sql.point_at_primary(conn, port=primary.port, password=state.replication_password,
                                         application_name=replica.name)
        except sql.Error:
            pass

    def _start(self, server: Server, state: ClusterState, *, preferred: int | None) -> int:
        """Start `server` on `preferred` if it is free, else on a new port; retry when another process takes it."""
        for attempt in range(_PORT_ATTEMPTS):
            port = ports.pick(preferred=preferred if attempt == 0 else None, taken=self._ports_held(server))
            try:
                server.start(port=port, superuser_password=state.superuser_password, timeout=START_TIMEOUT_SECONDS)
                return port
            except PortTaken:
                log.info("port %d was taken before %s could listen on it: trying another", port, server.name)
        raise DriverError(f"{server.name} found no free port in {_PORT_ATTEMPTS} attempts")

    def _ports_held(self, server: Server) -> set[int]:
        """The ports of every other instance this driver holds, running or not, so none takes another's."""
        held: set[int] = set()
        for cluster_id in self._layout.cluster_ids():
            try:
                state = self._store.load(cluster_id)
            except DriverError:
                continue
            if state is not None:
                held.update(i.port for i in state.instances if i.name != server.name)
        return held

    # Observing

    def _ready(self, state: ClusterState) -> tuple[int, list[str]]:
        """How many instances are ready (a primary answering out of recovery, replicas streaming), and why not."""
        primary = state.primary
        assert primary is not None
        ready, problems, streams = 0, [], {}
        try:
            with self._connect(primary, state) as conn:
                if sql.in_recovery(conn):
                    problems.append(f"the primary {primary.name} is in recovery")
                else:
                    ready += 1
                streams = sql.streams(conn)
        except sql.Error:
            problems.append(f"the primary {primary.name} does not answer")
        for replica in state.replicas:
            if _streams(replica, streams):
                ready += 1
                continue
            try:
                with self._connect(replica, state) as conn:
                    recovering = sql.in_recovery(conn)
                problems.append(f"{replica.name} answers but does not stream" if recovering
                                else f"{replica.name} is not in recovery")
            except sql.Error:
                problems.append(f"{replica.name} does not answer")
        return ready, problems

    # Plumbing

    def _connect(self, instance: Instance, state: ClusterState) -> Connection:
        return sql.connect(port=instance.port, password=state.superuser_password)

    def _installations(self) -> dict[str, Installation]:
        with self._lock:
            if self._found is None:
                self._found = binaries.find_installations()
                log.info("PostgreSQL installations: %s",
                         ", ".join(f"{i.version} in {i.bin_dir}" for i in self._found.values()) or "none")
            return self._found

    def _installation(self, major: str) -> Installation:
        """The installation of `major`, copied under runtime/ when the server user cannot reach it."""
        with self._lock:
            usable = self._usable.get(major)
        if usable is None:
            usable = binaries.reachable(self._installations()[major], account=self._server_account(),
                                        runtime_dir=self._layout.runtime_dir)
            with self._lock:
                self._usable[major] = usable
        return usable

    def _server_account(self) -> Account:
        with self._lock:
            if self._account is None:
                self._account = server_account(self._server_user)
            return self._account

    def _prepare(self) -> None:
        """Make `data_dir` and its clusters folder; fail when they are unusable or the server user cannot enter them."""
        account = self._server_account()
        for folder, mode in ((self._layout.root, 0o755), (self._layout.clusters_dir, 0o711)):
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    folder.chmod(mode)
                except OSError as e:
                    raise DriverError(f"the local driver cannot create {folder}: {e.strerror}", transient=False) from e
        if not os.access(self._layout.clusters_dir, os.W_OK | os.X_OK):
            raise DriverError(f"the local driver cannot write in {self._layout.clusters_dir}", transient=False)
        blocked = account.blocked_folder(self._layout.clusters_dir)
        if blocked is not None:
            raise DriverError(f"the server user {account.name!r} cannot enter {blocked}; the local driver's data "
                              f"folder must be reachable by it", transient=False)

    def _server(self, cluster_id: str, name: str, installation: Installation | None = None) -> Server:
        path = self._layout.instance_dir(cluster_id, name)
        account = self._server_account()
        with self._lock:
            server = self._servers.get(path)
            if server is None:
                server = Server(name=name, data_dir=path, log_path=self._layout.log_path(cluster_id, name),
                                installation=installation, account=account)
                self._servers[path] = server
            elif installation is not None:
                server.installation = installation
            return server

    def _cluster_lock(self, cluster_id: str) -> threading.Lock:
        with self._lock:
            return self._cluster_locks.setdefault(cluster_id, threading.Lock())

    def _holds(self, cluster_id: str) -> bool:
        try:
            return self._store.exists(cluster_id)
        except Refused:
            return False

    def _state_if_held(self, cluster_id: str) -> ClusterState | None:
        return self._store.load(cluster_id) if self._holds(cluster_id) else None

    def _instance_names(self, cluster_id: str) -> list[str]:
        """Every instance with a data directory or a state entry, replicas first (highest first), the primary last."""
        try:
            state = self._store.load(cluster_id)
        except DriverError:
            state = None
        names = {i.name for i in state.instances} if state else set()
        folder = self._layout.cluster_dir(cluster_id)
        names.update(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(f"{cluster_id}-"))
        return sorted(names, key=lambda name: -_index(name))


def _streams(replica: Instance, streams: dict[str, sql.Stream]) -> bool:
    stream = streams.get(replica.slot or "")
    return stream is not None and stream.state == "streaming"


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def _index(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _check_servable(desired: DesiredState) -> None:
    if not 1 <= desired.instances <= MAX_INSTANCES:
        raise Refused(f"the local driver serves 1 to {MAX_INSTANCES} instances, not {desired.instances}")
    if desired.owner in _RESERVED_ROLES or desired.owner.startswith("pg_") or not desired.owner:
        raise Refused(f"the role name {desired.owner!r} is reserved")
    if desired.database in _RESERVED_DATABASES or not desired.database:
        raise Refused(f"the database name {desired.database!r} is reserved")
    if max(len(desired.owner.encode()), len(desired.database.encode())) > _NAME_BYTES:
        raise Refused(f"role and database names are at most {_NAME_BYTES} bytes")
    if not desired.password.get_secret_value():
        raise Refused("the owner's password is empty")
