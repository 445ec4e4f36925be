"""Everything the driver asks its servers, over psycopg connections to 127.0.0.1.

Passwords never travel as SQL text: each is turned into a SCRAM verifier on the client first, so neither the
server log nor an error message can show one.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orochi_agent.drivers.local.ports import HOST

APPLICATION_NAME = "orochi-agent"
CONNECT_TIMEOUT_SECONDS = 2
SUPERUSER = "postgres"
REPLICATION_ROLE = "streaming_replica"

Error = psycopg.Error


@dataclass(frozen=True)
class Stream:
    """One replica's replication slot on the primary, as pg_replication_slots and pg_stat_replication see it."""

    slot: str
    state: str | None
    replay_lag_seconds: float | None


@dataclass(frozen=True)
class Activity:
    connections: int
    max_connections: int
    database_size_bytes: int | None
    transactions: int


def connect(*, port: int, password: str, user: str = SUPERUSER, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=HOST, port=port, user=user, password=password, dbname=dbname, application_name=APPLICATION_NAME,
        connect_timeout=CONNECT_TIMEOUT_SECONDS, sslmode="disable", gssencmode="disable", autocommit=True,
    )


def in_recovery(conn: psycopg.Connection) -> bool:
    return bool(_one(conn, "SELECT pg_is_in_recovery()"))


def max_connections(conn: psycopg.Connection) -> int:
    return int(str(_one(conn, "SHOW max_connections")))  # SHOW answers text


def ensure_login_role(conn: psycopg.Connection, *, role: str, password: str, set_password: bool,
                      replication: bool = False) -> bool:
    """Create `role` with `password` if it is missing, or set its password when `set_password`. True when it wrote."""
    exists = bool(_one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)))
    if exists and not set_password:
        return False
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
    options = sql.SQL("REPLICATION LOGIN" if replication else "LOGIN")
    conn.execute(
        sql.SQL("{} {} WITH {} PASSWORD {}").format(verb, sql.Identifier(role), options, sql.Literal(verifier))
    )
    return True


def ensure_database(conn: psycopg.Connection, *, name: str, owner: str) -> bool:
    """Create database `name` owned by `owner`, or give it to `owner`. True when it wrote anything."""
    current = _one(
        conn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,), default=None
    )
    if current == owner:
        return False
    if current is None:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    else:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return True


def streams(conn: psycopg.Connection) -> dict[str, Stream]:
    """Every physical replication slot on this primary, with the state of the walsender using it."""
    rows = conn.execute(
        "SELECT s.slot_name, r.state, extract(epoch FROM r.replay_lag)::float8"
        " FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
        " WHERE s.slot_type = 'physical'"
    ).fetchall()
    return {slot: Stream(slot=slot, state=state, replay_lag_seconds=lag) for slot, state, lag in rows}


def current_lsn(conn: psycopg.Connection) -> str:
    return str(_one(conn, "SELECT pg_current_wal_lsn()"))


def replayed(conn: psycopg.Connection, *, slot: str, lsn: str) -> bool:
    """Whether the replica streaming through `slot` has replayed this primary's WAL up to `lsn`."""
    return bool(_one(
        conn,
        "SELECT r.replay_lsn >= %s::pg_lsn FROM pg_replication_slots s JOIN pg_stat_replication r"
        " ON r.pid = s.active_pid WHERE s.slot_name = %s",
        (lsn, slot), default=False,
    ))


def checkpoint(conn: psycopg.Connection) -> None:
    """A checkpoint; on a replica, a restartpoint at the last checkpoint it replayed."""
    conn.execute("CHECKPOINT")


def drop_slot(conn: psycopg.Connection, slot: str) -> None:
    """Drop `slot` if it exists. Raises psycopg.Error while a walsender still uses it."""
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))


def primary_port(conn: psycopg.Connection) -> int | None:
    """The port of the primary this replica streams from, by its primary_conninfo."""
    conninfo = str(_one(conn, "SHOW primary_conninfo", default=""))
    port = conninfo_to_dict(conninfo).get("port") if conninfo else None
    return int(port) if port else None


def point_at_primary(conn: psycopg.Connection, *, port: int, password: str, application_name: str) -> None:
    """Make this replica stream from the primary at `port` (primary_conninfo reloads without a restart)."""
    conninfo = make_conninfo(
        host=HOST, port=port, user=REPLICATION_ROLE, password=password, application_name=application_name,
        sslmode="disable", gssencmode="disable",
    )
    conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo)))
    conn.execute("SELECT pg_reload_conf()")


def activity(conn: psycopg.Connection, *, database: str | None) -> Activity:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        "        AND application_name IS DISTINCT FROM %s),"
        " current_setting('max_connections')::int,"
        " (SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s),"
        " (SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database)::bigint",
        (APPLICATION_NAME, database),
    ).fetchone()
    assert row is not None
    connections, limit, size, transactions = row
    return Activity(connections=connections, max_connections=limit, database_size_bytes=size,
                    transactions=transactions)


def _one(conn: psycopg.Connection, query: str, params: tuple[object, ...] = (), *, default: object = 0) -> object:
    row = conn.execute(query, params).fetchone()
    return row[0] if row is not None else default
