"""The concurrency tuner finds each node's best in-flight count."""

from __future__ import annotations

import heapq
import random

import pytest

from runner._adaptive import ConcurrencyTuner


def throughput(limit: int, best: int) -> float:
    """Answers/s of a node that gains from concurrency up to ``best``, then slows down."""
    if limit <= best:
        return float(limit)
    return best * (1 - 0.15 * (limit - best))


def drive(tuner: ConcurrencyTuner, best: int, answers: int) -> tuple[float, list[int]]:
    """Feed a node's answers at its current limit's rate, each with the latency that many
    requests in flight give (Little's law); returns (elapsed, limits seen)."""
    now, limits = 0.0, []
    for _ in range(answers):
        rate = throughput(tuner.limit, best)
        now += 1 / rate
        tuner.observe(now, 1, latency=tuner.limit / rate, in_flight=tuner.limit, saturated=True)
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
    assert answers / elapsed >= 0.95 * throughput(best, best)


def test_tuner_never_leaves_its_bounds() -> None:
    tuner = ConcurrencyTuner(ceiling=3)
    _, limits = drive(tuner, 8, 400)
    assert set(limits) <= {1, 2, 3} and limits[-1] == 3


def test_starved_windows_are_not_measured() -> None:
    tuner = ConcurrencyTuner(ceiling=8)
    for i in range(100):
        tuner.observe(float(i), 1, latency=1.0, in_flight=1, saturated=False)
    assert tuner.limit == 1 and tuner.rates == {}


def test_the_request_sent_into_the_freed_place_does_not_count_for_the_new_level() -> None:
    # A serial node (one at a time, FIFO queue): 1 answer/s whatever the limit.
    tuner = ConcurrencyTuner(ceiling=8)
    assert tuner.observe(1.0, 1, latency=1.0, in_flight=1, saturated=True) == 2  # climbing
    # At t=1 two requests went out: the first took the freed place (served at once), the
    # second queued behind it. Only the second says what 2 in flight gives.
    tuner.observe(2.0, 1, latency=1.0, in_flight=1, saturated=True)
    tuner.observe(3.0, 1, latency=2.0, in_flight=2, saturated=True)
    tuner.observe(4.0, 1, latency=2.0, in_flight=2, saturated=True)
    assert tuner.rates[2] == tuner.rates[1] == 1.0
    assert tuner.limit == 1  # no better than 1: fewer in flight wins


def drive_fifo(tuner: ConcurrencyTuner, servers: int, answers: int, seed: int) -> list[int]:
    """A queueing node: ``servers`` requests served at once, the rest wait in FIFO order,
    service times vary ±50 %. Every answer is fed to the tuner with the in-flight count it
    was sent with; returns the limit after each answer."""
    rng = random.Random(seed)
    free_at = [0.0] * servers
    pending: list[tuple[float, float, int]] = []  # (answered at, sent at, in flight at send)
    now, in_flight, limits = 0.0, 0, []

    def send() -> None:
        nonlocal in_flight
        in_flight += 1
        server = min(range(servers), key=free_at.__getitem__)
        free_at[server] = max(now, free_at[server]) + rng.uniform(0.5, 1.5)
        heapq.heappush(pending, (free_at[server], now, in_flight))

    for _ in range(answers):
        while in_flight < tuner.limit:
            send()
        now, sent, at = heapq.heappop(pending)
        in_flight -= 1
        tuner.observe(now, 1, latency=now - sent, in_flight=at, saturated=True)
        limits.append(tuner.limit)
    return limits


@pytest.mark.parametrize("servers", [1, 2, 3, 4, 6])
def test_on_a_queueing_node_the_tuner_settles_on_its_server_count(servers: int) -> None:
    # Beyond its servers a node's throughput is flat and only its queue grows: the tuner
    # must not take the queue for capacity.
    settled = []
    for seed in range(3):
        tail = drive_fifo(ConcurrencyTuner(ceiling=8), servers, 3000, seed)[-1000:]
        settled.append(max(set(tail), key=tail.count))
    assert sorted(settled)[1] == servers  # the median of three runs


def gentle(limit: int, best: int) -> float:
    """A node that runs ``limit`` sequences at once (it said so) but peaks at ``best``:
    linear gains up to it, 5 % less per sequence beyond."""
    return float(limit) if limit <= best else best * (1 - 0.05 * (limit - best))


@pytest.mark.parametrize("best", [1, 2, 4, 8])
def test_a_tuner_started_at_the_nodes_slots_searches_down_to_the_best(best: int) -> None:
    tuner = ConcurrencyTuner(ceiling=8, limit=8)
    now, limits = 0.0, []
    for _ in range(600):
        rate = gentle(tuner.limit, best)
        now += 1 / rate
        tuner.observe(now, 1, latency=tuner.limit / rate, in_flight=tuner.limit, saturated=True)
        limits.append(tuner.limit)
    tail = limits[-200:]
    assert max(set(tail), key=tail.count) == best
    assert 600 / now >= 0.9 * gentle(best, best)
