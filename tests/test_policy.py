"""The failure policy as a table: what happened → what the engine does next."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runner._config import EngineConfig
from runner._errors import (
    AnswerError,
    NodeBusy,
    NodeError,
    NodeTimeout,
    ProtocolError,
    ServerError,
    TransportError,
)
from runner._policy import (
    Decision,
    Fault,
    History,
    RefusalStreak,
    Where,
    backoff,
    classify,
    decide,
    probe_pause,
    retry_delay,
)

SETTINGS = EngineConfig(
    max_attempts=4, busy_retries=3, json_attempts=3, retry_timeout=100.0,
    backoff_initial=0.5, backoff_max=4.0, probe_interval=2.0,
)  # fmt: skip


def status(code: int) -> ServerError:
    return ServerError(f"HTTP {code}: no", status=code)


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (TransportError("refused"), Fault.transport),
        (NodeTimeout("slow"), Fault.timeout),
        (ProtocolError("html"), Fault.malformed),
        (status(500), Fault.server),
        (status(502), Fault.server),
        (status(503), Fault.server),
        (status(408), Fault.server),
        (status(429), Fault.server),
        (NodeBusy("full", status=503, retry_after=2.0), Fault.busy),
        (NodeBusy("full", status=429, retry_after=2.0), Fault.busy),
        (status(401), Fault.refused),
        (status(403), Fault.refused),
        (status(404), Fault.refused),
        (status(400), Fault.bad_request),
        (status(413), Fault.bad_request),
        (status(422), Fault.bad_request),
        (AnswerError("not JSON"), Fault.rejected),
    ],
)
def test_each_exception_stands_for_one_fault(exc: NodeError | AnswerError, fault: Fault) -> None:
    assert classify(exc) is fault


FIRST = History()


@pytest.mark.parametrize(
    ("fault", "history", "expected"),
    [
        # node faults: another node at once, then the backoff; counted against both
        (Fault.transport, FIRST, Decision(Where.other_node, 0.0, 0.0, True, True)),
        (Fault.timeout, History(node_failures=1), Decision(Where.other_node, 0.5, 0.0, True, True)),
        (Fault.server, History(node_failures=2), Decision(Where.other_node, 1.0, 0.0, True, True)),
        (Fault.malformed, FIRST, Decision(Where.other_node, 0.0, 0.0, True, True)),
        (Fault.refused, FIRST, Decision(Where.other_node, 0.0, 0.0, True, True)),
        # busy: anywhere, the node waits, nothing counted
        (Fault.busy, History(busy=2), Decision(Where.any_node, 0.0, 2.5, False, False)),
        # answers the job rejects: the next seed, anywhere, counted against the item only
        (Fault.rejected, History(answers=1), Decision(Where.any_node, 0.0, 0.0, False, True)),
    ],
)
def test_a_retried_failure_goes_where_the_table_says(
    fault: Fault, history: History, expected: Decision
) -> None:
    assert decide(fault, history, SETTINGS, retry_after=2.5) == expected


def test_a_bad_request_fails_the_item_at_once_with_the_nodes_message() -> None:
    decision = decide(Fault.bad_request, FIRST, SETTINGS, message="n1: HTTP 400: max_tokens")
    assert decision.where is Where.nowhere and not decision.against_node
    assert decision.why == "bad request: n1: HTTP 400: max_tokens"


@pytest.mark.parametrize("fault", [Fault.transport, Fault.server, Fault.refused])
def test_the_last_allowed_node_failure_fails_the_item(fault: Fault) -> None:
    decision = decide(fault, History(node_failures=3), SETTINGS, message="n1: down")
    assert decision.where is Where.nowhere and decision.against_node
    assert decision.why == "gave up after 4 node failures: n1: down"


def test_a_node_fault_is_not_held_against_the_item_on_a_node_already_failing() -> None:
    decision = decide(Fault.transport, History(node_failures=3), SETTINGS, node_failing=True)
    assert decision.where is Where.other_node and decision.against_node
    assert not decision.against_item


def test_busy_answers_past_their_limit_become_node_failures() -> None:
    decision = decide(Fault.busy, History(busy=3), SETTINGS, retry_after=1.0)
    assert decision == Decision(Where.other_node, 0.0, 0.0, True, True)


@pytest.mark.parametrize("fault", [Fault.busy, Fault.server, Fault.transport])
def test_past_the_retry_timeout_a_failure_fails_the_item(fault: Fault) -> None:
    assert decide(fault, History(elapsed=101.0), SETTINGS).where is Where.nowhere


def test_the_last_content_attempt_fails_the_item() -> None:
    assert decide(Fault.rejected, History(answers=2), SETTINGS).where is Where.nowhere


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff(n, initial=0.5, maximum=4.0) for n in range(6)] == [
        0.5, 1.0, 2.0, 4.0, 4.0, 4.0,
    ]  # fmt: skip
    assert [retry_delay(n, SETTINGS) for n in range(1, 6)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert [probe_pause(n, SETTINGS) for n in range(3)] == [2.0, 4.0, 4.0]
    assert probe_pause(0, replace(SETTINGS, backoff_max=1.0)) == 1.0


def test_a_refusal_streak_stops_the_run_only_when_it_starts_it_with_one_status() -> None:
    streak = RefusalStreak(limit=3)
    assert [streak.failed(Fault.bad_request, 400) for _ in range(3)] == [False, False, True]
    mixed = RefusalStreak(limit=2)
    assert not mixed.failed(Fault.refused, 401) and not mixed.failed(Fault.bad_request, 400)
    assert not mixed.failed(Fault.bad_request, 400)  # broken by the other status
    answered = RefusalStreak(limit=1)
    answered.answered()
    assert not answered.failed(Fault.bad_request, 400)
    busy_first = RefusalStreak(limit=1)
    assert not busy_first.failed(Fault.busy, 503) and busy_first.failed(Fault.bad_request, 400)
    assert not RefusalStreak(limit=0).failed(Fault.bad_request, 400)
