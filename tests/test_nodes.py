"""What the engine keeps per node: its report line and latency quantiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner._nodes import LatencyHistogram, NodeSpec, NodeState, SlotsFrom


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@given(
    latencies=st.lists(st.floats(1e-4, 3600.0), min_size=1, max_size=300),
    q=st.sampled_from([0.01, 0.5, 0.95, 0.99, 1.0]),
)
def test_histogram_quantiles_are_within_half_a_percent_of_the_exact_ones(
    latencies: list[float], q: float
) -> None:
    histogram = LatencyHistogram()
    for latency in latencies:
        histogram.add(latency)
    exact = _nearest_rank(latencies, q)
    assert histogram.quantile(q) == pytest.approx(exact, rel=0.006)


def test_histogram_memory_does_not_grow_with_the_requests() -> None:
    histogram = LatencyHistogram()
    for i in range(200_000):
        histogram.add(1.0 + (i % 1000) / 1000)  # latencies between 1 and 2 s
    assert histogram.count == 200_000
    assert len(histogram._buckets) <= 71  # log(2) / log(1.01) ≈ 70 buckets span 1-2 s


def test_report_line_has_no_latencies_before_the_first_answer() -> None:
    node = NodeState(NodeSpec("n1", "http://127.0.0.1:1", slots=2))
    line = node.stats()
    assert line.latency_p50_s is None and line.latency_p95_s is None
    node.record_success(0.25, 10)
    node.record_success(0.5, 20)
    line = node.stats()
    assert line.latency_p50_s == pytest.approx(0.25, rel=0.006)
    assert line.latency_p95_s == pytest.approx(0.5, rel=0.006)
    assert line.tokens_per_s == 40.0


@pytest.mark.parametrize("slots_from", list(SlotsFrom))
def test_report_line_says_the_nodes_slots_and_where_they_came_from(slots_from: SlotsFrom) -> None:
    node = NodeState(NodeSpec("n1", "http://127.0.0.1:1", slots=3, slots_from=slots_from))
    node.busy = 2
    line = node.stats()
    assert (line.slots, line.slots_from, line.busy, line.errors) == (
        3,
        slots_from.value,
        2,
        0,
    )


@pytest.mark.parametrize(
    ("slots", "answers", "expected"), [(8, 1, 8), (8, 4, 2), (8, 3, 2), (2, 8, 1)]
)
def test_a_node_gets_as_many_requests_of_k_answers_as_its_slots_hold(
    slots: int, answers: int, expected: int
) -> None:
    spec = NodeSpec("n", "http://127.0.0.1:1", slots=slots, slots_from=SlotsFrom.node)
    assert spec.for_answers(answers).slots == expected
    assert spec.for_answers(answers).slots_from is SlotsFrom.node
