"""Agent tokens: `AGENT#<id>`/`AGENT`, holding only the token's hash, the one region it may act for and what its
agent said in its last heartbeat; indexed by region in `gsi1` (`AGENTS#<region>`/`<id>`), revoked ones included."""

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
    driver = UnicodeAttribute(null=True)
    clusters = NumberAttribute(null=True)

    @staticmethod
    def key(token_id: str) -> tuple[str, str]:
        return f"AGENT#{token_id}", "AGENT"

    @staticmethod
    def region_index(region: str, token_id: str) -> tuple[str, str]:
        return f"AGENTS#{region}", token_id

    def index_region(self) -> None:
        self.gsi1pk, self.gsi1sk = AgentToken.region_index(self.region, self.id)


def put_token(token: AgentToken) -> None:
    token.index_region()
    token.save(condition=AgentToken.pk.does_not_exist())


def get_token(token_id: str) -> AgentToken | None:
    return get(AgentToken, *AgentToken.key(token_id))


def tokens_of_region(region: str) -> list[AgentToken]:
    """Every token of `region`, live or revoked, by id (one Query of gsi1, following its pages)."""
    pk, _ = AgentToken.region_index(region, "")
    return list(AgentToken.query(pk, index_name="gsi1"))


def revoke_token(token_id: str, *, at: int) -> None:
    try:
        AgentToken(*AgentToken.key(token_id)).update(
            actions=[AgentToken.revoked_at.set(at)], condition=AgentToken.pk.exists()
        )
    except UpdateError as e:
        if condition_failed(e):
            raise errors.NotFound("agent token not found") from e
        raise


def record_heartbeat(
    token_id: str, *, region: str, at: int, agent_version: str, driver: str | None, clusters: int | None
) -> None:
    """Keep what the agent sent, in one UpdateItem; a field it left out is removed rather than kept stale.

    The region index is written again too, so a token created before that index existed joins it.
    """
    gsi1pk, gsi1sk = AgentToken.region_index(region, token_id)
    AgentToken(*AgentToken.key(token_id)).update(actions=[
        AgentToken.last_seen_at.set(at),
        AgentToken.agent_version.set(agent_version),
        AgentToken.driver.set(driver) if driver is not None else AgentToken.driver.remove(),
        AgentToken.clusters.set(clusters) if clusters is not None else AgentToken.clusters.remove(),
        AgentToken.gsi1pk.set(gsi1pk),
        AgentToken.gsi1sk.set(gsi1sk),
    ])
