"""Autoscaling: the policy a cluster carries, its validation, and the pure decisions made from its metrics.

Metrics samples fold into a `State` (`fold`): for each scale-up signal the run of consecutive samples at or
above its threshold, the run of samples under *both* scale-down thresholds, the latest storage used and a few
storage points for the trend. A gap between samples longer than the allowed gap, or a sample lacking a signal,
breaks the runs that need it. `decide` turns a state and the cluster's facts into at most one change;
`due_at` says when a decision may next be due, which is what the candidate index is sorted by.

Rules (every threshold comparison is on whole-percent thresholds; cpu_percent as the agent reports it,
connections_percent = connections / max_connections):
- up one instance when a signal stayed ≥ its `scale_up` threshold over `scale_up.for_seconds` of samples;
- down one instance when both signals stayed < their `scale_down` thresholds over `scale_down.for_seconds`;
- the window must lie after the cluster's last instance change, and no change within `cooldown_seconds` of it;
- storage grows by `increment_percent` (whole GB, at most `max_gb`) when the latest used storage is at or above
  `threshold_percent` of `storage_gb`, or when the trend says it would be full within `cooldown_seconds`
  (before a next grow could take effect), at most once per `cooldown_seconds`;
- nothing is decided on a stale state (latest sample older than the allowed gap).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from chalicelib import catalog
from chalicelib.shapes import JSON_INTEGER, Body

SIGNALS = ("cpu_percent", "connections_percent")
TREND_POINTS = 12  # storage points kept for the trend, spread over the trend window
TREND_MIN_SPAN = 300  # seconds of storage samples before a trend is believed

Instances = Annotated[int, Field(ge=catalog.INSTANCES_MIN, le=catalog.INSTANCES_MAX), JSON_INTEGER]
UpPercent = Annotated[int, Field(ge=1, le=100), JSON_INTEGER]
DownPercent = Annotated[int, Field(ge=0, le=99), JSON_INTEGER]
THRESHOLD_ORDER = "must be below scale_up.{signal}"


class ScaleUp(Body):
    cpu_percent: UpPercent = 75
    connections_percent: UpPercent = 80
    for_seconds: Annotated[int, Field(ge=60, le=3600), JSON_INTEGER] = 120


class ScaleDown(Body):
    """Each threshold must be below its `scale_up` one (a rule between two fields, which JSON Schema cannot state)."""

    cpu_percent: DownPercent = 25
    connections_percent: DownPercent = 30
    for_seconds: Annotated[int, Field(ge=60, le=86400), JSON_INTEGER] = 600


class StorageAutoscaling(Body):
    """Given, it is on unless `enabled: false`, and then needs `max_gb`; omitted, storage autoscaling is off
    (growth cannot be undone)."""

    # The validator's rule, stated in the document: off, or a max_gb.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["enabled"], "properties": {"enabled": {"const": False}}},
        {"required": ["max_gb"], "properties": {"max_gb": {"not": {"type": "null"}}}},
    ]})

    enabled: bool = True
    threshold_percent: Annotated[int, Field(ge=50, le=99), JSON_INTEGER] = 80
    increment_percent: Annotated[int, Field(ge=5, le=100), JSON_INTEGER] = 25
    max_gb: catalog.StorageGb | None = None


class AutoscalingPolicy(Body):
    # min_instances <= max_instances, stated in the document as one branch per possible minimum.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"min_instances": {"const": low}, "max_instances": {"minimum": low}}}
        for low in range(catalog.INSTANCES_MIN, catalog.INSTANCES_MAX + 1)
    ]})

    enabled: bool = True
    min_instances: Instances
    max_instances: Instances
    scale_up: ScaleUp = Field(default_factory=ScaleUp)
    scale_down: ScaleDown = Field(default_factory=ScaleDown)
    cooldown_seconds: Annotated[int, Field(ge=60, le=86400), JSON_INTEGER] = 300
    storage: StorageAutoscaling = Field(default_factory=lambda: StorageAutoscaling(enabled=False))

    @model_validator(mode="after")
    def _coherent(self) -> AutoscalingPolicy:
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.min_instances > self.max_instances:
            problems.append((("min_instances",), "must not exceed max_instances"))
        for signal in SIGNALS:
            if getattr(self.scale_down, signal) >= getattr(self.scale_up, signal):
                problems.append((("scale_down", signal), THRESHOLD_ORDER.format(signal=signal)))
        if self.storage.enabled and self.storage.max_gb is None:
            problems.append((("storage", "max_gb"), "required when storage autoscaling is enabled"))
        if problems:
            raise ValidationError.from_exception_data("AutoscalingPolicy", [
                InitErrorDetails(type=PydanticCustomError("autoscaling_policy", message), loc=loc, input=None)
                for loc, message in problems
            ])
        return self


LEGACY_FIELDS = ("target_cpu_percent", "max_storage_gb")


def stored_policy(raw: dict[str, Any]) -> AutoscalingPolicy:
    """A policy as the cluster record keeps it (fields of the earlier placeholder shape are dropped)."""
    return AutoscalingPolicy.model_validate({k: v for k, v in raw.items() if k not in LEGACY_FIELDS})


def fingerprint(policy: AutoscalingPolicy) -> str:
    """Changes whenever the policy does: runs measured against other thresholds are not evidence."""
    return hashlib.sha256(json.dumps(policy.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


# --- samples and state ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One metrics sample as the decisions see it; None where the sample lacks the value."""

    at: int
    cpu_percent: float | None
    connections_percent: float | None
    storage_used_gb: float | None

    @classmethod
    def of(cls, at: int, values: dict[str, int | float], *, storage_gb: int | None = None) -> Reading:
        """With `storage_gb`, a sample giving only `storage_used_percent` (of that size) counts as its GB."""
        connections, limit = values.get("connections"), values.get("max_connections")
        percent = 100.0 * connections / limit if connections is not None and limit else None
        cpu, used, used_percent = values.get("cpu_percent"), values.get("storage_used_gb"), values.get("storage_used_percent")
        if used is None and used_percent is not None and storage_gb is not None:
            used = used_percent * storage_gb / 100
        return cls(at=at, cpu_percent=None if cpu is None else float(cpu), connections_percent=percent,
                   storage_used_gb=None if used is None else float(used))


@dataclass(frozen=True)
class Run:
    """Consecutive samples (no gap) meeting a condition, from `since` to `last`; `extremes` holds, per signal,
    the value nearest the threshold (the lowest of a high run, the highest of a low run)."""

    since: int
    last: int
    extremes: dict[str, float]


@dataclass(frozen=True)
class State:
    policy: str
    last_at: int | None = None
    high: dict[str, Run] = field(default_factory=dict)
    low: Run | None = None
    used_gb: float | None = None
    used_at: int | None = None
    trend: tuple[tuple[int, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        def run(r: Run) -> dict[str, Any]:
            return {"since": r.since, "last": r.last, "extremes": r.extremes}

        return {"policy": self.policy, "last_at": self.last_at, "high": {k: run(v) for k, v in self.high.items()},
                "low": run(self.low) if self.low else None, "used_gb": self.used_gb, "used_at": self.used_at,
                "trend": [list(p) for p in self.trend]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> State:
        def run(r: dict[str, Any]) -> Run:
            return Run(int(r["since"]), int(r["last"]), {k: float(v) for k, v in r["extremes"].items()})

        return cls(policy=str(raw["policy"]), last_at=raw.get("last_at"),
                   high={k: run(v) for k, v in (raw.get("high") or {}).items()},
                   low=run(raw["low"]) if raw.get("low") else None, used_gb=raw.get("used_gb"),
                   used_at=raw.get("used_at"), trend=tuple((int(a), float(g)) for a, g in raw.get("trend") or ()))

    def quiet(self) -> bool:
        """No run open: nothing but the storage points is worth keeping."""
        return not self.high and self.low is None


def _extend(run: Run | None, at: int, values: dict[str, float], *, keep: Any, joined: bool) -> Run:
    if run is None or not joined:
        return Run(at, at, values)
    return Run(run.since, at, {k: keep(run.extremes.get(k, v), v) for k, v in values.items()})


def fold(state: State | None, policy: AutoscalingPolicy, reading: Reading, *, max_gap: int,
         trend_window: int) -> State:
    """`state` with one more sample. Samples not newer than the latest folded are ignored."""
    mark = fingerprint(policy)
    if state is None or state.policy != mark:
        state = State(policy=mark)
    if state.last_at is not None and reading.at <= state.last_at:
        return state
    joined = state.last_at is not None and reading.at - state.last_at <= max_gap
    high: dict[str, Run] = {}
    for signal in SIGNALS:
        value = getattr(reading, signal)
        if value is not None and value >= getattr(policy.scale_up, signal):
            high[signal] = _extend(state.high.get(signal), reading.at, {signal: value}, keep=min, joined=joined)
    low = None
    cpu, connections = reading.cpu_percent, reading.connections_percent
    if (cpu is not None and connections is not None and cpu < policy.scale_down.cpu_percent
            and connections < policy.scale_down.connections_percent):
        low = _extend(state.low, reading.at, {"cpu_percent": cpu, "connections_percent": connections}, keep=max,
                      joined=joined)
    used_gb, used_at, trend = state.used_gb, state.used_at, state.trend
    if reading.storage_used_gb is not None:
        used_gb, used_at = reading.storage_used_gb, reading.at
        trend = tuple(p for p in trend if p[0] >= reading.at - trend_window)
        if not trend or reading.at - trend[-1][0] >= trend_window // TREND_POINTS:
            trend = (*trend, (reading.at, reading.storage_used_gb))[-TREND_POINTS:]
    return replace(state, last_at=reading.at, high=high, low=low, used_gb=used_gb, used_at=used_at, trend=trend)


# --- decisions --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the decisions need of the cluster record."""

    instances: int
    storage_gb: int
    instances_changed_at: int | None
    storage_changed_at: int | None


@dataclass(frozen=True)
class Decision:
    instances: int | None
    storage_gb: int | None
    reason: str


def _clock(at: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


def _window_start(run: Run, changed_at: int | None) -> int:
    """Evidence counts only from the cluster's last instance change on."""
    return run.since if changed_at is None else max(run.since, changed_at)


def _fresh(state: State, now: int, max_gap: int) -> bool:
    return state.last_at is not None and now - state.last_at <= max_gap


def _instances(policy: AutoscalingPolicy, state: State, facts: Facts, now: int) -> tuple[int, str] | None:
    changed = facts.instances_changed_at
    if changed is not None and now < changed + policy.cooldown_seconds:
        return None
    if facts.instances < policy.max_instances:
        for signal in SIGNALS:
            run = state.high.get(signal)
            if run is not None and run.last - _window_start(run, changed) >= policy.scale_up.for_seconds:
                start = _window_start(run, changed)
                return facts.instances + 1, (
                    f"{signal} {run.extremes[signal]:.1f} ≥ {getattr(policy.scale_up, signal)} for {run.last - start} s "
                    f"(samples {_clock(start)}–{_clock(run.last)})")
    low = state.low
    if facts.instances > policy.min_instances and low is not None:
        start = _window_start(low, changed)
        if low.last - start >= policy.scale_down.for_seconds:
            cpu, connections = low.extremes["cpu_percent"], low.extremes["connections_percent"]
            return facts.instances - 1, (
                f"cpu_percent {cpu:.1f} < {policy.scale_down.cpu_percent} and connections_percent {connections:.1f} "
                f"< {policy.scale_down.connections_percent} for {low.last - start} s "
                f"(samples {_clock(start)}–{_clock(low.last)})")
    return None


def trend_gb_per_second(state: State) -> float | None:
    """Storage growth over the trend window, from its oldest point to the latest sample; None until believed."""
    if not state.trend or state.used_at is None or state.used_gb is None:
        return None
    first_at, first_gb = state.trend[0]
    span = state.used_at - first_at
    return (state.used_gb - first_gb) / span if span >= TREND_MIN_SPAN else None


def _storage(policy: AutoscalingPolicy, state: State, facts: Facts, now: int, max_gap: int) -> tuple[int, str] | None:
    storage = policy.storage
    if not storage.enabled or storage.max_gb is None or facts.storage_gb >= storage.max_gb:
        return None
    if state.used_gb is None or state.used_at is None or now - state.used_at > max_gap:
        return None
    changed = facts.storage_changed_at
    if changed is not None and now < changed + policy.cooldown_seconds:
        return None
    grown = min(storage.max_gb, facts.storage_gb + math.ceil(facts.storage_gb * storage.increment_percent / 100))
    percent = 100.0 * state.used_gb / facts.storage_gb
    if percent >= storage.threshold_percent:
        return grown, (f"storage_used_percent {percent:.1f} ≥ {storage.threshold_percent} "
                       f"(sample {_clock(state.used_at)})")
    rate = trend_gb_per_second(state)
    if rate is not None and rate > 0:
        full_in = (facts.storage_gb - state.used_gb) / rate - (now - state.used_at)
        if full_in <= policy.cooldown_seconds:
            return grown, (f"storage_used_gb {state.used_gb:.2f} of {facts.storage_gb} growing {rate * 60:.3f} GB/min: "
                           f"full in {max(0, round(full_in))} s, within the cooldown of {policy.cooldown_seconds} s "
                           f"(samples {_clock(state.trend[0][0])}–{_clock(state.used_at)})")
    return None


def decide(policy: AutoscalingPolicy, state: State, facts: Facts, *, now: int, max_gap: int) -> Decision | None:
    """The change the policy calls for now, if any (one instance at a time, storage up to `max_gb`)."""
    if not policy.enabled or state.policy != fingerprint(policy) or not _fresh(state, now, max_gap):
        return None
    instances = _instances(policy, state, facts, now)
    storage = _storage(policy, state, facts, now, max_gap)
    if instances is None and storage is None:
        return None
    reasons = []
    if instances is not None:
        reasons.append(f"{instances[1]}: {facts.instances} → {instances[0]} instances")
    if storage is not None:
        reasons.append(f"{storage[1]}: {facts.storage_gb} → {storage[0]} GB")
    return Decision(instances=instances[0] if instances else None, storage_gb=storage[0] if storage else None,
                    reason="; ".join(reasons))


def due_at(policy: AutoscalingPolicy, state: State, facts: Facts) -> int | None:
    """When a decision may become due if the samples go on as they are; None when none can be.

    A cluster is a candidate (in the autoscaler's index) exactly while this is not None.
    """
    if not policy.enabled or state.policy != fingerprint(policy) or state.last_at is None:
        return None
    times: list[int] = []
    changed = facts.instances_changed_at
    cooled = 0 if changed is None else changed + policy.cooldown_seconds
    if facts.instances < policy.max_instances:
        times += [max(cooled, _window_start(run, changed) + policy.scale_up.for_seconds) for run in state.high.values()]
    if facts.instances > policy.min_instances and state.low is not None:
        times.append(max(cooled, _window_start(state.low, changed) + policy.scale_down.for_seconds))
    storage = policy.storage
    if (storage.enabled and storage.max_gb is not None and facts.storage_gb < storage.max_gb
            and state.used_gb is not None and state.used_at is not None):
        storage_cooled = 0 if facts.storage_changed_at is None else facts.storage_changed_at + policy.cooldown_seconds
        rate = trend_gb_per_second(state)
        over = 100.0 * state.used_gb / facts.storage_gb >= storage.threshold_percent
        trending = rate is not None and rate > 0 and (facts.storage_gb - state.used_gb) / rate <= policy.cooldown_seconds
        if over or trending:
            times.append(max(storage_cooled, state.used_at))
    return min(times) if times else None
