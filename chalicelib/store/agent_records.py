"""Agent tokens: only the token's hash, the one region it may act for and what its agent said in its last
heartbeat; indexed by region (revoked ones included). See `keys` for where they live."""

from __future__ import annotations

from pynamodb.attributes import UnicodeAttribute

from chalicelib.store import keys
from chalicelib.store.table import IntegerAttribute, OptionalIntegerAttribute, Item, condition, get


class AgentToken(Item):
    id = UnicodeAttribute()
    region = UnicodeAttribute()
    token_hash = UnicodeAttribute()
    created_at = IntegerAttribute()
    revoked_at = OptionalIntegerAttribute()
    last_seen_at = OptionalIntegerAttribute()
    agent_version = UnicodeAttribute(null=True)
    driver = UnicodeAttribute(null=True)
    clusters = OptionalIntegerAttribute()


def put_token(*, token_id: str, region: str, token_hash: str, at: int) -> AgentToken:
    gsi1pk, gsi1sk = keys.agent_by_region(region, token_id)
    token = AgentToken(*keys.agent_token(token_id), id=token_id, region=region, token_hash=token_hash, created_at=at,
                       gsi1pk=gsi1pk, gsi1sk=gsi1sk)
    token.save(condition=AgentToken.pk.does_not_exist())
    return token


def get_token(token_id: str) -> AgentToken | None:
    return get(AgentToken, keys.agent_token(token_id))


def tokens_of_region(region: str) -> list[AgentToken]:
    """Every token of `region`, live or revoked, by id (one Query of gsi1, following its pages)."""
    return list(AgentToken.query(keys.agents_of_region(region), index_name="gsi1"))


def revoke_token(token_id: str, *, at: int) -> None:
    """ConditionFailed when there is no such token."""
    with condition():
        AgentToken(*keys.agent_token(token_id)).update(actions=[AgentToken.revoked_at.set(at)],
                                                       condition=AgentToken.pk.exists())


def record_heartbeat(
    token_id: str, *, region: str, at: int, agent_version: str, driver: str | None, clusters: int | None
) -> None:
    """Keep what the agent sent, in one UpdateItem; a field it left out is removed rather than kept stale.

    The region index is written again too, so a token created before that index existed joins it.
    """
    gsi1pk, gsi1sk = keys.agent_by_region(region, token_id)
    AgentToken(*keys.agent_token(token_id)).update(actions=[
        AgentToken.last_seen_at.set(at),
        AgentToken.agent_version.set(agent_version),
        AgentToken.driver.set(driver) if driver is not None else AgentToken.driver.remove(),
        AgentToken.clusters.set(clusters) if clusters is not None else AgentToken.clusters.remove(),
        AgentToken.gsi1pk.set(gsi1pk),
        AgentToken.gsi1sk.set(gsi1sk),
    ])
