"""The autoscaler's pure decisions: metric series (folded sample by sample) → the change the policy calls for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.autoscaling import AutoscalingPolicy, Facts, Reading, State, decide, due_at, fold

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
EVERY = 30
MAX_GAP = 90
TREND_WINDOW = 3600
POLICY = {"min_instances": 1, "max_instances": 5, "storage": {"enabled": True, "max_gb": 100}}


def policy(**overrides: Any) -> AutoscalingPolicy:
    return AutoscalingPolicy.model_validate({**POLICY, **overrides})


def load(cpu: float | None = 10, connections: int | None = 10, *, max_connections: int | None = 100,
         used_gb: float | None = 5) -> dict[str, float]:
    values = {"cpu_percent": cpu, "connections": connections, "max_connections": max_connections,
              "storage_used_gb": used_gb}
    return {k: v for k, v in values.items() if v is not None}


HIGH_CPU, HIGH_CONNECTIONS, QUIET, MIDDLE = load(cpu=91), load(connections=85), load(cpu=10, connections=10), load(cpu=50, connections=50)
MISSING = None  # no sample at that slot (three in a row: a gap of 4 × EVERY, over MAX_GAP)


def series(*values: dict[str, float] | None, start: int = T0, every: int = EVERY) -> list[Reading]:
    return [Reading.of(start + i * every, v) for i, v in enumerate(values) if v is not None]


def folded(readings: list[Reading], p: AutoscalingPolicy) -> State:
    state: State | None = None
    for reading in readings:
        state = fold(state, p, reading, max_gap=MAX_GAP, trend_window=TREND_WINDOW)
    assert state is not None
    return state


@dataclass(frozen=True)
class Case:
    name: str
    readings: list[Reading]
    expected: tuple[int | None, int | None] | None  # (instances, storage_gb) of the decision, None for no decision
    instances: int = 2
    storage_gb: int = 20
    instances_changed_at: int | None = None
    storage_changed_at: int | None = None
    late: int = 0  # seconds between the latest sample and the decision
    policy: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def last(readings: list[Reading]) -> int:
    return readings[-1].at


CASES = [
    Case("sustained cpu for the whole window scales up one", series(*[HIGH_CPU] * 5), (3, None),
         reason="cpu_percent 91.0 ≥ 75 for 120 s (samples 00:00:00–00:02:00): 2 → 3 instances"),
    Case("sustained connections scale up one", series(*[HIGH_CONNECTIONS] * 5), (3, None),
         reason="connections_percent 85.0 ≥ 80 for 120 s"),
    Case("sustained load shorter than the window does nothing", series(*[HIGH_CPU] * 4), None),
    Case("a single spike does nothing", series(QUIET, QUIET, load(cpu=99), QUIET, QUIET, QUIET), None),
    Case("a spike in the middle of quiet breaks the scale-down run", series(*[QUIET] * 10, HIGH_CPU, *[QUIET] * 10),
         None, instances=3),
    Case("oscillation around the up threshold never scales", series(*[load(cpu=74), load(cpu=76)] * 20), None),
    Case("oscillation between the thresholds neither scales up nor down", series(*[HIGH_CPU, QUIET] * 30), None,
         instances=3),
    Case("middling load does nothing", series(*[MIDDLE] * 30), None, instances=3),
    Case("quiet under both thresholds for the down window scales down one", series(*[QUIET] * 21), (2, None),
         instances=3, reason="cpu_percent 10.0 < 25 and connections_percent 10.0 < 30 for 600 s"),
    Case("quiet cpu but busy connections does not scale down", series(*[load(cpu=5, connections=50)] * 21), None,
         instances=3),
    Case("quiet shorter than the down window does nothing", series(*[QUIET] * 20), None, instances=3),
    Case("never above max_instances", series(*[HIGH_CPU] * 10), None, instances=5),
    Case("never below min_instances", series(*[QUIET] * 30), None, instances=1),
    Case("inside the cooldown of the last instance change: nothing", series(*[HIGH_CPU] * 10), None,
         instances_changed_at=T0 + 270 - 200),
    Case("after the cooldown, with the window after the change: up", series(*[HIGH_CPU] * 20), (3, None),
         instances_changed_at=T0 + 570 - 400),
    Case("samples from before the last change are no evidence", series(*[HIGH_CPU] * 20), None,
         instances_changed_at=T0 + 570 - 70, policy={"cooldown_seconds": 60}),
    Case("a gap in the samples breaks the scale-down run", series(*[QUIET] * 12, MISSING, MISSING, MISSING, *[QUIET] * 9),
         None, instances=3),
    Case("a gap breaks the scale-up run", series(HIGH_CPU, HIGH_CPU, MISSING, MISSING, MISSING, HIGH_CPU, HIGH_CPU), None),
    Case("a sample without cpu breaks the scale-down run", series(*[QUIET] * 10, load(cpu=None), *[QUIET] * 10),
         None, instances=3),
    Case("a sample without connections breaks the scale-down run",
         series(*[QUIET] * 10, load(connections=None), *[QUIET] * 10), None, instances=3),
    Case("a sample without max_connections breaks the scale-down run",
         series(*[QUIET] * 10, load(max_connections=None), *[QUIET] * 10), None, instances=3),
    Case("a sample without cpu keeps a connections run going",
         series(*[HIGH_CONNECTIONS] * 2, load(cpu=None, connections=85), *[HIGH_CONNECTIONS] * 2), (3, None)),
    Case("stale metrics (the agent went quiet) decide nothing", series(*[HIGH_CPU] * 10), None, late=MAX_GAP + 1),
    Case("storage at the threshold grows by the increment", series(load(used_gb=16)), (None, 25),
         reason="storage_used_percent 80.0 ≥ 80 (sample 00:00:00): 20 → 25 GB"),
    Case("storage grows by whole GB, rounded up", series(load(used_gb=18)), (None, 27), storage_gb=21),
    Case("storage grows at most to max_gb", series(load(used_gb=80)), (None, 100), storage_gb=90),
    Case("storage at max_gb does not grow", series(load(used_gb=99)), None, storage_gb=100),
    Case("storage under the threshold and growing slowly does not grow",
         series(*[load(used_gb=10 + i * 0.25) for i in range(21)]), None, instances=1),
    Case("storage that would be full within the cooldown grows before the threshold",
         series(*[load(used_gb=10 + i * 0.55) for i in range(11)]), (None, 25), instances=1, reason="full in"),
    Case("storage inside its cooldown does not grow", series(load(used_gb=19)), None, storage_changed_at=T0 - 100),
    Case("storage autoscaling off does not grow", series(load(used_gb=19)), None,
         policy={"storage": {"enabled": False}}),
    Case("load and storage together make one change", series(*[load(cpu=91, used_gb=17)] * 5), (3, 25)),
    Case("a disabled policy decides nothing", series(*[HIGH_CPU] * 10), None, policy={"enabled": False}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision(case: Case) -> None:
    p = policy(**case.policy)
    state = folded(case.readings, p)
    facts = Facts(instances=case.instances, storage_gb=case.storage_gb,
                  instances_changed_at=case.instances_changed_at, storage_changed_at=case.storage_changed_at)
    decision = decide(p, state, facts, now=last(case.readings) + case.late, max_gap=MAX_GAP)
    got = None if decision is None else (decision.instances, decision.storage_gb)
    assert got == case.expected, decision
    if case.reason:
        assert decision is not None and case.reason in decision.reason, decision.reason
    if case.expected is not None:
        due = due_at(p, state, facts)
        assert due is not None and due <= last(case.readings) + case.late, "a due decision is in the index"


def test_a_run_is_due_when_its_window_would_end_and_not_before() -> None:
    p = policy()
    state = folded(series(HIGH_CPU, HIGH_CPU), p)
    facts = Facts(instances=2, storage_gb=20, instances_changed_at=None, storage_changed_at=None)
    assert due_at(p, state, facts) == T0 + 120
    assert decide(p, state, facts, now=T0 + 120, max_gap=MAX_GAP) is None, "the samples do not cover it yet"
    assert due_at(p, folded(series(*[QUIET] * 3), p), facts) == T0 + 600
    assert due_at(p, folded(series(*[MIDDLE] * 3), p), facts) is None, "nothing can be due: not a candidate"
    at_min = Facts(instances=1, storage_gb=20, instances_changed_at=None, storage_changed_at=None)
    assert due_at(p, folded(series(*[QUIET] * 3), p), at_min) is None
    cooling = Facts(instances=2, storage_gb=20, instances_changed_at=T0 + 30, storage_changed_at=None)
    assert due_at(p, state, cooling) == T0 + 30 + 300, "not before the cooldown ends"


def test_a_sample_older_than_the_latest_is_ignored_and_a_new_policy_restarts_the_runs() -> None:
    p = policy()
    state = folded(series(*[HIGH_CPU] * 3), p)
    assert fold(state, p, Reading.of(T0 + 15, QUIET), max_gap=MAX_GAP, trend_window=TREND_WINDOW) == state
    stricter = policy(scale_up={"cpu_percent": 95})
    restarted = fold(state, stricter, Reading.of(T0 + 90, HIGH_CPU), max_gap=MAX_GAP, trend_window=TREND_WINDOW)
    assert restarted.high == {} and restarted.last_at == T0 + 90


def test_a_sample_with_only_the_storage_percent_counts_against_the_size_it_was_taken_at() -> None:
    reading = Reading.of(T0, {"storage_used_percent": 85.0}, storage_gb=20)
    assert reading.storage_used_gb == 17.0
    p = policy()
    facts = Facts(instances=1, storage_gb=20, instances_changed_at=None, storage_changed_at=None)
    decision = decide(p, folded([reading], p), facts, now=T0, max_gap=MAX_GAP)
    assert decision is not None and decision.storage_gb == 25


def test_state_survives_its_stored_form() -> None:
    p = policy()
    state = folded(series(*[load(cpu=91, used_gb=10 + i) for i in range(30)]), p)
    assert State.from_json(state.to_json()) == state
    assert len(state.trend) <= 12
