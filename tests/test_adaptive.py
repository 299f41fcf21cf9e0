"""The concurrency tuner finds each node's best in-flight count."""

from __future__ import annotations

import pytest

from runner._adaptive import ConcurrencyTuner


def throughput(limit: int, best: int) -> float:
    """Answers/s of a node that gains from concurrency up to ``best``, then slows down."""
    if limit <= best:
        return float(limit)
    return best * (1 - 0.15 * (limit - best))


def drive(tuner: ConcurrencyTuner, best: int, answers: int) -> tuple[float, list[int]]:
    """Feed a node's answers at its current limit's rate; returns (elapsed, limits seen)."""
    now, limits = 0.0, []
    for _ in range(answers):
        now += 1 / throughput(tuner.limit, best)
        tuner.observe(now, 1, saturated=True)
        limits.append(tuner.limit)
    return now, limits


@pytest.mark.parametrize("best", [1, 2, 4, 8])
def test_tuner_settles_on_the_best_in_flight_count(best: int) -> None:
    tuner = ConcurrencyTuner(ceiling=8)
    _, limits = drive(tuner, best, 600)
    tail = limits[-200:]
    assert max(set(tail), key=tail.count) == best


@pytest.mark.parametrize("best", [1, 2, 4, 8])
def test_tuner_reaches_most_of_the_best_fixed_throughput(best: int) -> None:
    tuner = ConcurrencyTuner(ceiling=8)
    answers = 2000
    elapsed, _ = drive(tuner, best, answers)
    assert answers / elapsed >= 0.9 * throughput(best, best)


def test_tuner_never_leaves_its_bounds() -> None:
    tuner = ConcurrencyTuner(ceiling=3)
    _, limits = drive(tuner, 8, 400)
    assert set(limits) <= {1, 2, 3} and limits[-1] == 3


def test_starved_windows_are_not_measured() -> None:
    tuner = ConcurrencyTuner(ceiling=8)
    for i in range(100):
        tuner.observe(float(i), 1, saturated=False)
    assert tuner.limit == 1 and tuner.rates == {}
