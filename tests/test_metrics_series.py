"""GET …/clusters/{id}/metrics?window=1h|24h|7d over HTTP: samples posted with the region's agent token come back
as a fixed number of buckets per window, with each series' aggregates, gaps as nulls, on the API's clock."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.store import keys
from conftest import Account, Stack, cluster_path, send_together

WINDOWS = {"1h": (60, 60), "24h": (900, 96), "7d": (3600, 168)}
NULL_POINT = {
    "connections": {"avg": None, "max": None}, "connections_percent": {"avg": None, "max": None},
    "cpu_percent": {"avg": None, "max": None}, "memory_percent": {"avg": None, "max": None},
    "storage_used_gb": {"last": None}, "storage_used_percent": {"last": None}, "database_size_gb": {"last": None},
    "transactions_per_second": {"avg": None, "max": None}, "replication_lag_seconds": {"max": None},
}


def post(stack: Stack, cluster_id: str, samples: list[tuple[int, dict[str, Any]]]) -> None:
    response = stack.call("POST", "/v1/agent/metrics", token=stack.agent("nyc1"), json={"samples": [
        {"cluster_id": cluster_id, "at": at, "values": values} for at, values in samples]})
    assert response.status_code == 200, response.text


def series(stack: Stack, account: Account, cluster_id: str, window: str | None = None) -> dict[str, Any]:
    query = f"?window={window}" if window else ""
    response = stack.call("GET", cluster_path(account.org_id, cluster_id) + "/metrics" + query,
                          token=account.access_token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def point(body: dict[str, Any], start: int) -> dict[str, Any]:
    found = [p for p in body["points"] if p["start"] == start]
    assert len(found) == 1, (start, body["start"], body["end"])
    values = dict(found[0])
    del values["start"]
    return values


def test_samples_land_in_their_buckets_with_each_series_aggregate_for_every_window(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1", storage_gb=20)["cluster"]
    b0 = (stack.now() - 600) // 900 * 900  # a minute that starts a 15-min bucket, 10 to 25 minutes ago
    first = {"cpu_percent": 10.0, "memory_percent": 40.0, "connections": 4, "max_connections": 100,
             "storage_used_gb": 1.0, "storage_used_percent": 5.0, "replication_lag_seconds": 0.5,
             "transactions_per_second": 100.0, "database_size_gb": 0.5}
    second = {"cpu_percent": 30.0, "memory_percent": 60.0, "connections": 10, "max_connections": 100,
              "storage_used_gb": 1.5, "storage_used_percent": 7.5, "replication_lag_seconds": 2.0,
              "transactions_per_second": 50.0, "database_size_gb": 0.75}
    third = {"cpu_percent": 50.0, "connections": 6, "storage_used_gb": 2.0, "replication_lag_seconds": 1.0}
    post(stack, cluster["id"], [(b0 + 5, first), (b0 + 35, second), (b0 + 65, third)])

    hour = series(stack, owner, cluster["id"])
    assert hour["window"] == "1h" and hour["bucket_seconds"] == 60
    assert point(hour, b0) == {
        "connections": {"avg": 7.0, "max": 10.0}, "connections_percent": {"avg": 7.0, "max": 10.0},
        "cpu_percent": {"avg": 20.0, "max": 30.0}, "memory_percent": {"avg": 50.0, "max": 60.0},
        "storage_used_gb": {"last": 1.5}, "storage_used_percent": {"last": 7.5}, "database_size_gb": {"last": 0.75},
        "transactions_per_second": {"avg": 75.0, "max": 100.0}, "replication_lag_seconds": {"max": 2.0},
    }
    assert point(hour, b0 + 60) == {
        **NULL_POINT, "connections": {"avg": 6.0, "max": 6.0}, "cpu_percent": {"avg": 50.0, "max": 50.0},
        "storage_used_gb": {"last": 2.0}, "replication_lag_seconds": {"max": 1.0},
    }
    assert point(hour, b0 - 60) == NULL_POINT and point(hour, b0 + 120) == NULL_POINT
    assert hour["latest"] == {"at": b0 + 65, "values": third}
    assert hour["max_connections"] == 100 and hour["storage_gb"] == 20
    assert hour["units"]["cpu_percent"] == "percent" and hour["units"]["storage_used_gb"] == "GB"

    whole = {
        "connections": {"avg": pytest.approx(20 / 3), "max": 10.0}, "connections_percent": {"avg": 7.0, "max": 10.0},
        "cpu_percent": {"avg": 30.0, "max": 50.0}, "memory_percent": {"avg": 50.0, "max": 60.0},
        "storage_used_gb": {"last": 2.0}, "storage_used_percent": {"last": 7.5}, "database_size_gb": {"last": 0.75},
        "transactions_per_second": {"avg": 75.0, "max": 100.0}, "replication_lag_seconds": {"max": 2.0},
    }
    day, week = series(stack, owner, cluster["id"], "24h"), series(stack, owner, cluster["id"], "7d")
    assert (day["window"], day["bucket_seconds"], week["window"], week["bucket_seconds"]) == ("24h", 900, "7d", 3600)
    assert point(day, b0) == whole
    assert point(week, b0 // 3600 * 3600) == whole
    assert [p for p in day["points"] if p["start"] != b0 and point(day, p["start"]) != NULL_POINT] == []


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
def test_every_window_has_its_fixed_number_of_aligned_points_ending_now(stack: Stack, owner: Account,
                                                                        window: str) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    bucket, count = WINDOWS[window]
    before = stack.now()
    body = series(stack, owner, cluster["id"], window)
    after = stack.now()
    starts = [p["start"] for p in body["points"]]
    assert len(starts) == count
    assert all(s % bucket == 0 for s in starts)
    assert starts == list(range(starts[0], starts[0] + count * bucket, bucket))
    assert before // bucket * bucket <= starts[-1] <= after // bucket * bucket
    assert (body["start"], body["end"]) == (starts[0], starts[-1] + bucket)


def test_a_cluster_without_samples_has_only_null_points(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    for window in WINDOWS:
        body = series(stack, owner, cluster["id"], window)
        assert all(point(body, p["start"]) == NULL_POINT for p in body["points"]), window
        assert "latest" not in body and "max_connections" not in body


def test_more_samples_than_points_still_give_the_fixed_number_of_points(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    start = (stack.now() - 3000) // 60 * 60 + 60  # 150 samples 20 s apart: 50 whole minutes, 3 samples each
    samples = [(start + 20 * n, {"cpu_percent": float(n % 100)}) for n in range(150)]
    post(stack, cluster["id"], samples)
    body = series(stack, owner, cluster["id"], "1h")
    assert len(body["points"]) == 60
    filled = {p["start"]: p["cpu_percent"] for p in body["points"] if p["cpu_percent"]["avg"] is not None}
    assert sorted(filled) == [start + 60 * m for m in range(50)]
    for m in range(50):
        taken = [float((3 * m + k) % 100) for k in range(3)]
        assert filled[start + 60 * m] == {"avg": pytest.approx(sum(taken) / 3), "max": max(taken)}


def test_a_batch_sent_again_is_counted_once(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = (stack.now() - 300) // 60 * 60
    batch = [(at + 10, {"cpu_percent": 10.0}), (at + 40, {"cpu_percent": 40.0})]
    post(stack, cluster["id"], batch)
    post(stack, cluster["id"], batch)
    post(stack, cluster["id"], [(at + 20, {"cpu_percent": 90.0})])  # older than the bucket's newest: not folded
    assert point(series(stack, owner, cluster["id"]), at)["cpu_percent"] == {"avg": 25.0, "max": 40.0}


def test_batches_racing_on_one_bucket_lose_no_newer_sample(stack: Stack, owner: Account) -> None:
    """Six batches at once, each one newer sample of the same minute: the rollup writes are conditional on what they
    read, so the loser of each race reads and folds again, and the newest sample always ends in the bucket (an
    unconditional write could leave an older writer's rollup last)."""
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    base = (stack.now() - 60) // 60 * 60
    bodies = [{"samples": [{"cluster_id": cluster["id"], "at": base + n, "values": {"connections": 10 * n}}]}
              for n in range(1, 7)]
    answers = send_together(stack, "POST", "/v1/agent/metrics", bodies, token=stack.agent("nyc1"))
    assert [status for status, _ in answers] == [200] * 6, answers
    body = series(stack, owner, cluster["id"])
    assert point(body, base)["connections"]["max"] == 60.0
    assert body["latest"]["at"] == base + 6 and body["latest"]["values"]["connections"] == 60


def test_a_sample_older_than_the_hour_reaches_only_the_day_and_week_rollups(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now() - 2 * 3600
    post(stack, cluster["id"], [(at, {"cpu_percent": 70.0})])
    assert stack.raw_item(keys.metric_rollup(cluster["id"], 60, at - at % 60)) is None
    assert point(series(stack, owner, cluster["id"], "24h"), at - at % 900)["cpu_percent"] == {"avg": 70.0, "max": 70.0}
    assert point(series(stack, owner, cluster["id"], "7d"), at - at % 3600)["cpu_percent"] == {"avg": 70.0, "max": 70.0}


def test_a_bad_window_is_refused_naming_window(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    for window in ("30m", "1H", "", "3600"):
        response = stack.call("GET", cluster_path(owner.org_id, cluster["id"]) + f"/metrics?window={window}",
                              token=owner.access_token)
        assert response.status_code == 400, (window, response.text)
        assert [d["field"] for d in response.json()["error"]["details"]] == ["window"], window


def test_viewers_read_the_series_and_other_organizations_get_not_found(stack: Stack, owner: Account) -> None:
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now() - 30
    post(stack, cluster["id"], [(at, {"cpu_percent": 33.0})])
    viewer = stack.join(owner, "viewer")
    assert series(stack, viewer, cluster["id"])["latest"] == {"at": at, "values": {"cpu_percent": 33.0}}

    outsider = stack.register(organization_name="Elsewhere")
    for org_id in (owner.org_id, outsider.org_id):
        response = stack.call("GET", cluster_path(org_id, cluster["id"]) + "/metrics", token=outsider.access_token)
        assert response.status_code == 404, (org_id, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_points_move_with_the_api_clock(own_stack: Any) -> None:
    """On a stack of its own, whose clock it moves and whose access tokens outlive the moves."""
    stack: Stack = own_stack(ACCESS_TOKEN_TTL_SECONDS=str(86400))
    owner = stack.register()
    cluster = stack.create_cluster(owner, region="nyc1")["cluster"]
    at = stack.now() - 5
    bucket = at // 60 * 60
    post(stack, cluster["id"], [(at, {"connections": 3})])

    def index(body: dict[str, Any], start: int) -> int:
        return [p["start"] for p in body["points"]].index(start)

    now = series(stack, owner, cluster["id"])
    assert index(now, bucket) >= 58 and now["points"][index(now, bucket)]["connections"]["max"] == 3.0
    stack.advance_clock(30 * 60)
    later = series(stack, owner, cluster["id"])
    assert index(later, bucket) == index(now, bucket) - 30 or index(later, bucket) == index(now, bucket) - 31
    assert later["points"][index(later, bucket)]["connections"]["max"] == 3.0
    stack.advance_clock(60 * 60)
    gone = series(stack, owner, cluster["id"])
    assert bucket < gone["start"] and "latest" not in gone
    assert all(point(gone, p["start"]) == NULL_POINT for p in gone["points"])
    day = series(stack, owner, cluster["id"], "24h")
    assert point(day, at // 900 * 900)["connections"] == {"avg": 3.0, "max": 3.0}
