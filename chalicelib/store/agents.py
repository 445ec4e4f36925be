"""Agent tokens: `AGENT#<id>`/`AGENT`, holding only the token's hash and the one region it may act for."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import UpdateError

from chalicelib import errors
from chalicelib.store.base import Item, condition_failed, get


class AgentToken(Item):
    id = UnicodeAttribute()
    region = UnicodeAttribute()
    token_hash = UnicodeAttribute()
    created_at = NumberAttribute()
    revoked_at = NumberAttribute(null=True)
    last_seen_at = NumberAttribute(null=True)
    agent_version = UnicodeAttribute(null=True)

    @staticmethod
    def key(token_id: str) -> tuple[str, str]:
        return f"AGENT#{token_id}", "AGENT"


def put_token(token: AgentToken) -> None:
    token.save(condition=AgentToken.pk.does_not_exist())


def get_token(token_id: str) -> AgentToken | None:
    return get(AgentToken, *AgentToken.key(token_id))


def revoke_token(token_id: str, *, at: int) -> None:
    try:
        AgentToken(*AgentToken.key(token_id)).update(
            actions=[AgentToken.revoked_at.set(at)], condition=AgentToken.pk.exists()
        )
    except UpdateError as e:
        if condition_failed(e):
            raise errors.NotFound("agent token not found") from e
        raise


def record_heartbeat(token_id: str, *, at: int, agent_version: str) -> None:
    AgentToken(*AgentToken.key(token_id)).update(
        actions=[AgentToken.last_seen_at.set(at), AgentToken.agent_version.set(agent_version)]
    )
