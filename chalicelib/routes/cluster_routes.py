from __future__ import annotations

from typing import Any

from chalicelib import catalog, clusters, lifecycle, metric_series
from chalicelib.shapes import ListQuery, Page
from chalicelib.web import Call, Reply, Router, current_request_id

router = Router(__name__, tag="clusters")
CLUSTER = "/v1/orgs/{org_id}/clusters/{cluster_id}"
NO_STORE = {"Cache-Control": "no-store"}


def _accepted(change: lifecycle.Change) -> Reply:
    return Reply(clusters.mutation_out(change), headers={"ETag": lifecycle.etag(change.cluster)})


@router.route("GET", "/v1/catalog", auth="none", response=catalog.CatalogOut)
def get_catalog(call: Call[Any]) -> catalog.CatalogOut:
    """Regions, PostgreSQL versions, compute sizes, storage and instance bounds"""
    return catalog.catalog(call.settings)


@router.route("POST", "/v1/orgs/{org_id}/clusters", permission="clusters:write", status=202, body=clusters.ClusterCreate,
              response=clusters.MutationOut, errors=(403, 404, 409, 422), idempotent=True)
def create_cluster(call: Call[clusters.ClusterCreate]) -> Reply:
    """Create a cluster (member and above)"""
    return _accepted(clusters.create(call.settings, call.member, call.body))


@router.route("GET", "/v1/orgs/{org_id}/clusters", permission="clusters:read", query=clusters.ClusterListQuery,
              response=Page[clusters.ClusterOut], errors=(404,))
def list_clusters(call: Call[Any]) -> Page[clusters.ClusterOut]:
    """The organization's live clusters"""
    return clusters.list_clusters(call.settings, call.member, call.query)


@router.route("GET", CLUSTER, permission="clusters:read", response=clusters.ClusterOut, errors=(404,))
def get_cluster(call: Call[Any]) -> Reply:
    """One cluster, with its ETag"""
    cluster = clusters.get(call.member, call.params["cluster_id"])
    return Reply(clusters.cluster_out(cluster), headers={"ETag": lifecycle.etag(cluster)})


@router.route("PATCH", CLUSTER, permission="clusters:write", status=202, body=clusters.ClusterPatch, response=clusters.MutationOut,
              errors=(403, 404, 409, 412, 422), headers=("If-Match",))
def update_cluster(call: Call[clusters.ClusterPatch]) -> Reply:
    """Change name, IP allowlist, autoscaling, storage tiers or deletion protection"""
    return _accepted(clusters.update(call.settings, call.member, call.params["cluster_id"], call.body,
                                     call.headers.get("if-match")))


@router.route("POST", CLUSTER + "/scale", permission="clusters:write", status=202, body=clusters.ScaleRequest, response=clusters.MutationOut,
              errors=(403, 404, 409, 412, 422), headers=("If-Match",), idempotent=True)
def scale_cluster(call: Call[clusters.ScaleRequest]) -> Reply:
    """Change instances, size or storage (storage only grows)"""
    return _accepted(clusters.scale(call.settings, call.member, call.params["cluster_id"], call.body,
                                    call.headers.get("if-match")))


@router.route("DELETE", CLUSTER, permission="clusters:delete", status=202, response=clusters.MutationOut, errors=(403, 404, 409, 412),
              headers=("If-Match",))
def delete_cluster(call: Call[Any]) -> Reply:
    """Delete a cluster (admin and above; refused while deletion protection is on)"""
    return _accepted(clusters.delete(call.settings, call.member, call.params["cluster_id"], call.headers.get("if-match")))


@router.route("GET", CLUSTER + "/operations", permission="clusters:read", query=ListQuery, response=Page[clusters.OperationOut], errors=(404,))
def list_operations(call: Call[Any]) -> Page[clusters.OperationOut]:
    """The cluster's operations, newest first"""
    return clusters.list_operations(call.settings, call.member, call.params["cluster_id"], call.query)


@router.route("GET", CLUSTER + "/operations/{operation_id}", permission="clusters:read", response=clusters.OperationOut, errors=(404,))
def get_operation(call: Call[Any]) -> clusters.OperationOut:
    """One operation"""
    return clusters.get_operation(call.member, call.params["cluster_id"], call.params["operation_id"])


@router.route("GET", CLUSTER + "/credentials", permission="clusters:credentials", response=clusters.CredentialsOut, errors=(403, 404, 409))
def get_credentials(call: Call[Any]) -> Reply:
    """Database credentials (admin and above; audited)"""
    credentials = clusters.credentials(call.settings, call.member, call.params["cluster_id"],
                                       request_id=current_request_id(), source_ip=call.source_ip)
    return Reply(credentials, headers=NO_STORE)


@router.route("GET", CLUSTER + "/metrics", permission="clusters:read", query=clusters.MetricsQuery,
              response=metric_series.SeriesOut, errors=(404,))
def get_metrics(call: Call[Any]) -> metric_series.SeriesOut:
    """Metric series for charts: a fixed number of buckets per window (1h: 60 × 1 min, 24h: 96 × 15 min, 7d: 168 × 1 h)"""
    return clusters.metrics(call.member, call.params["cluster_id"], call.query)
