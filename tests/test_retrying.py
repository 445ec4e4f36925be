"""The one retry policy for lost races (chalicelib.retrying), through its public function."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chalicelib import errors, retrying
from chalicelib.store.cluster_records import StaleVersion
from chalicelib.store.table import Contention, LostRace


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(retrying.time, "sleep", slept.append)
    return slept


def losing(times: int, race: type[LostRace] = LostRace) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(len(calls))
        if len(calls) <= times:
            raise race()
        return "won"

    return calls, attempt


@pytest.mark.parametrize("race", [LostRace, Contention, StaleVersion])
def test_a_lost_race_is_retried_on_fresh_state_until_won(sleeps: list[float], race: type[LostRace]) -> None:
    calls, attempt = losing(3, race)
    assert retrying.until_won(attempt, what="the thing") == "won"
    assert len(calls) == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= retrying.MAX_DELAY for s in sleeps)


def test_giving_up_is_an_error_the_caller_sees(sleeps: list[float]) -> None:
    calls, attempt = losing(retrying.ATTEMPTS)
    with pytest.raises(errors.Contention) as raised:
        retrying.until_won(attempt, what="the cluster")
    assert len(calls) == retrying.ATTEMPTS
    assert len(sleeps) == retrying.ATTEMPTS - 1
    assert raised.value.status == 409 and raised.value.code == "concurrent_update"
    assert "the cluster" in raised.value.message


def test_the_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setattr(retrying.random, "uniform", lambda low, high: high)
    _, attempt = losing(retrying.ATTEMPTS)
    with pytest.raises(errors.Contention):
        retrying.until_won(attempt, what="x")
    assert sleeps == sorted(sleeps)
    assert sleeps[0] == retrying.BASE_DELAY
    assert sleeps[-1] == retrying.MAX_DELAY


def test_anything_but_a_lost_race_propagates_at_once(sleeps: list[float]) -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise errors.NotFound("gone")

    with pytest.raises(errors.NotFound):
        retrying.until_won(attempt, what="x")
    assert calls == [1] and sleeps == []
