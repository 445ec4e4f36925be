"""Reading ahead: the items a request will need, fetched in one BatchGetItem before it asks for them."""

from __future__ import annotations

from chalicelib.store import keys
from chalicelib.store.table import Key, read_ahead


def request_items(*, session_id: str | None = None, agent_token_id: str | None = None,
                  member: tuple[str, str] | None = None, cluster_id: str | None = None) -> None:
    """Read ahead the caller's session or agent token, their membership (org id, user id) and the cluster in the path."""
    wanted: list[Key] = []
    if session_id is not None:
        wanted.append(keys.session(session_id))
    if agent_token_id is not None:
        wanted.append(keys.agent_token(agent_token_id))
    if member is not None:
        wanted.append(keys.member(*member))
    if cluster_id is not None:
        wanted.append(keys.cluster(cluster_id))
    read_ahead(wanted)
