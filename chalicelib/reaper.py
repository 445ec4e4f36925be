"""No stranded clusters: re-enqueue generations nobody observed, fail operations past their deadline."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib import jobs, lifecycle
from chalicelib.settings import Settings
from chalicelib.store import clusters as store
from chalicelib.clock import now

log = logging.getLogger("orochi.reaper")


@dataclass(frozen=True)
class Sweep:
    requeued: int
    failed_operations: int


def sweep(settings: Settings) -> Sweep:
    at = now()
    requeued = 0
    for region in settings.region_slugs:
        for cluster in store.unsettled_clusters(region, enqueued_before=at - settings.reconcile_stale_after):
            job = jobs.ReconcileJob(cluster_id=cluster.id, org_id=cluster.org_id, region=region,
                                    generation=cluster.generation, enqueued_at=at)
            if jobs.enqueue(settings, job):
                store.touch_unsettled(cluster, at=at)
                requeued += 1
    overdue = store.overdue_operations(now=at)
    for operation in overdue:
        lifecycle.fail_overdue(settings, operation, at=at)
    result = Sweep(requeued=requeued, failed_operations=len(overdue))
    log.info("reaper sweep", extra={"requeued": result.requeued, "failed_operations": result.failed_operations})
    return result
