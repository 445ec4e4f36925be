"""The table's key schema, in one place: every primary key and index key the control plane writes or reads.

Primary keys (`pk`, `sk`):

    user              USER#<id>               PROFILE
    e-mail claim      EMAIL#<lowercased>      EMAIL          (its conditional put makes e-mails unique)
    login session     SESSION#<id>            SESSION
    refresh token     REFRESH#<sha256>        REFRESH
    failed logins     LOGINFAIL#<lowercased>  LOGINFAIL
    organization      ORG#<id>                ORG
    member            ORG#<org>               MEMBER#<user>
    invitation        ORG#<org>               INVITE#<id>
    cluster name      ORG#<org>               CLUSTERNAME#<name>
    cluster           CLUSTER#<id>            CLUSTER
    operation         CLUSTER#<id>            OP#<sortable id>
    audit entry       CLUSTER#<id>            AUDIT#<at>#<id>
    autoscaling state CLUSTER#<id>            AUTOSCALE
    metric rollup     SERIES#<cluster>#<bucket seconds>  <bucket start>
    agent token       AGENT#<id>              AGENT
    idempotency key   IDEMP#<scope>#<key>     IDEMP
    rate counter      RATE#<caller>#<window>  RATE
    fleet counter     FLEET                   <counter>#<shard>   (clusters by status, open and failed operations)

Sparse global secondary indexes (an item is in an index only while it has that index's attributes):

    gsi1  memberships by user       USER#<user>                ORG#<org>
          live clusters by org      ORG#<org>#CLUSTERS         <created at>#<id>
          agent tokens by region    AGENTS#<region>            <token id>
    gsi2  live clusters by region   REGION#<region>            <id>
          open operations           OPENOPS                    <deadline>#<cluster>#<operation>
    gsi3  unsettled clusters        UNSETTLED#<region>         <last enqueued at>#<id>
          autoscaling candidates    AUTOSCALE#<region>         <decision due at>#<id>

Times in keys are epoch seconds, zero-padded to 10 digits so they sort as strings.
"""

from __future__ import annotations

Key = tuple[str, str]

MEMBER_PREFIX = "MEMBER#"
INVITATION_PREFIX = "INVITE#"
OPERATION_PREFIX = "OP#"
OPEN_OPERATIONS = "OPENOPS"


def _at(seconds: int) -> str:
    return f"{seconds:010d}"


def user(user_id: str) -> Key:
    return f"USER#{user_id}", "PROFILE"


def email_claim(email: str) -> Key:
    return f"EMAIL#{email.lower()}", "EMAIL"


def session(session_id: str) -> Key:
    return f"SESSION#{session_id}", "SESSION"


def refresh_token(digest: str) -> Key:
    return f"REFRESH#{digest}", "REFRESH"


def login_failures(email: str) -> Key:
    return f"LOGINFAIL#{email.lower()}", "LOGINFAIL"


def org(org_id: str) -> Key:
    return f"ORG#{org_id}", "ORG"


def member(org_id: str, user_id: str) -> Key:
    return f"ORG#{org_id}", f"{MEMBER_PREFIX}{user_id}"


def invitation(org_id: str, invitation_id: str) -> Key:
    return f"ORG#{org_id}", f"{INVITATION_PREFIX}{invitation_id}"


def org_partition(org_id: str) -> str:
    """The partition holding an organization, its members, invitations and cluster names."""
    return f"ORG#{org_id}"


def cluster_name(org_id: str, name: str) -> Key:
    return f"ORG#{org_id}", f"CLUSTERNAME#{name}"


def cluster(cluster_id: str) -> Key:
    return f"CLUSTER#{cluster_id}", "CLUSTER"


def cluster_partition(cluster_id: str) -> str:
    """The partition holding a cluster, its operations and its audit entries."""
    return f"CLUSTER#{cluster_id}"


def operation(cluster_id: str, operation_id: str) -> Key:
    return f"CLUSTER#{cluster_id}", f"{OPERATION_PREFIX}{operation_id}"


def audit_entry(cluster_id: str, at: int, entry_id: str) -> Key:
    return f"CLUSTER#{cluster_id}", f"AUDIT#{_at(at)}#{entry_id}"


def autoscale_state(cluster_id: str) -> Key:
    return f"CLUSTER#{cluster_id}", "AUTOSCALE"


def metric_rollups(cluster_id: str, bucket_seconds: int) -> str:
    """The partition holding a cluster's metric rollups of one bucket size, by bucket start."""
    return f"SERIES#{cluster_id}#{bucket_seconds}"


def metric_rollup(cluster_id: str, bucket_seconds: int, start: int) -> Key:
    return metric_rollups(cluster_id, bucket_seconds), _at(start)


def bucket_start(start: int) -> str:
    """The sort key of the rollup whose bucket starts at `start`."""
    return _at(start)


def agent_token(token_id: str) -> Key:
    return f"AGENT#{token_id}", "AGENT"


def idempotency(scope: str, key: str) -> Key:
    return f"IDEMP#{scope}#{key}", "IDEMP"


def rate_counter(caller: str, window_start: int) -> Key:
    return f"RATE#{caller}#{window_start}", "RATE"


FLEET = "FLEET"


def fleet_counter(counter: str, shard: int) -> Key:
    """One shard of a fleet-wide count; the shards of every counter share the FLEET partition (one Query reads all)."""
    return FLEET, f"{counter}#{shard:02d}"


def fleet_counter_name(sort_key: str) -> str:
    return sort_key.rpartition("#")[0]


# --- index keys ------------------------------------------------------------------------------------------------


def memberships_of(user_id: str) -> str:
    """gsi1: the memberships of a user."""
    return f"USER#{user_id}"


def member_by_user(org_id: str, user_id: str) -> Key:
    return memberships_of(user_id), f"ORG#{org_id}"


def clusters_of_org(org_id: str) -> str:
    """gsi1: an organization's live clusters, oldest first."""
    return f"ORG#{org_id}#CLUSTERS"


def cluster_by_org(org_id: str, created_at: int, cluster_id: str) -> Key:
    return clusters_of_org(org_id), f"{_at(created_at)}#{cluster_id}"


def agents_of_region(region: str) -> str:
    """gsi1: a region's agent tokens, live or revoked."""
    return f"AGENTS#{region}"


def agent_by_region(region: str, token_id: str) -> Key:
    return agents_of_region(region), token_id


def clusters_of_region(region: str) -> str:
    """gsi2: a region's live clusters."""
    return f"REGION#{region}"


def cluster_by_region(region: str, cluster_id: str) -> Key:
    return clusters_of_region(region), cluster_id


def open_operation(deadline: int, cluster_id: str, operation_id: str) -> Key:
    """gsi2: open operations, by deadline."""
    return OPEN_OPERATIONS, f"{_at(deadline)}#{cluster_id}#{operation_id}"


def due_before(at: int) -> str:
    """The index sort key below which entries timed at or after `at` do not lie."""
    return _at(at)


def unsettled_of_region(region: str) -> str:
    """gsi3: a region's clusters whose latest generation is not yet observed, by when it was last enqueued."""
    return f"UNSETTLED#{region}"


def unsettled_cluster(region: str, enqueued_at: int, cluster_id: str) -> Key:
    return unsettled_of_region(region), f"{_at(enqueued_at)}#{cluster_id}"


def autoscale_candidates_of_region(region: str) -> str:
    """gsi3: a region's clusters for which an autoscaling decision may be due, by when."""
    return f"AUTOSCALE#{region}"


def autoscale_candidate(region: str, due_at: int, cluster_id: str) -> Key:
    return autoscale_candidates_of_region(region), f"{_at(due_at)}#{cluster_id}"
