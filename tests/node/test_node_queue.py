"""Turn-taking in front of one model: one at a time, arrival order, bounded waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from runner.node._queue import QueueFull, Turns

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The node runs on asyncio (uvicorn's loop), so these tests drive asyncio directly."""
    return asyncio.run(coroutine)


def test_requests_are_served_one_at_a_time_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        turns = Turns(max_waiting=10)
        log: list[str] = []

        async def request(name: str) -> None:
            turn = await turns.acquire()
            log.append(f"start {name}")
            await asyncio.sleep(0.01)
            log.append(f"end {name}")
            turn.release()

        tasks = []
        for name in "abcde":
            tasks.append(asyncio.create_task(request(name)))
            await asyncio.sleep(0)  # let it queue before the next one arrives
        await asyncio.gather(*tasks)
        assert (turns.busy, turns.waiting) == (False, 0)
        return log

    expected = [f"{event} {name}" for name in "abcde" for event in ("start", "end")]
    assert run(scenario()) == expected


def test_queue_full_beyond_max_waiting() -> None:
    async def scenario() -> None:
        turns = Turns(max_waiting=1)
        first = await turns.acquire()
        waiter = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        assert (turns.busy, turns.waiting) == (True, 1)
        with pytest.raises(QueueFull):
            await turns.acquire()
        first.release()
        second = await waiter
        second.release()
        assert (turns.busy, turns.waiting) == (False, 0)

    run(scenario())


def test_max_waiting_zero_refuses_whenever_busy() -> None:
    async def scenario() -> None:
        turns = Turns(max_waiting=0)
        turn = await turns.acquire()
        with pytest.raises(QueueFull):
            await turns.acquire()
        turn.release()
        (await turns.acquire()).release()

    run(scenario())


def test_a_newcomer_cannot_jump_ahead_of_a_waiter() -> None:
    async def scenario() -> list[str]:
        turns = Turns(max_waiting=5)
        order: list[str] = []
        first = await turns.acquire()

        async def request(name: str) -> None:
            turn = await turns.acquire()
            order.append(name)
            turn.release()

        waiter = asyncio.create_task(request("waiter"))
        await asyncio.sleep(0)
        first.release()  # handed to the waiter, which has not run yet
        newcomer = asyncio.create_task(request("newcomer"))
        await asyncio.gather(waiter, newcomer)
        return order

    assert run(scenario()) == ["waiter", "newcomer"]


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        turns = Turns(max_waiting=1)
        first = await turns.acquire()
        waiter = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert turns.waiting == 0
        first.release()
        assert not turns.busy

    run(scenario())


def test_a_waiter_cancelled_just_as_it_gets_the_turn_passes_it_on() -> None:
    async def scenario() -> None:
        turns = Turns(max_waiting=2)
        first = await turns.acquire()
        doomed = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        patient = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        first.release()  # the turn goes to `doomed`...
        doomed.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await doomed
        turn = await asyncio.wait_for(patient, timeout=1)
        turn.release()
        assert (turns.busy, turns.waiting) == (False, 0)

    run(scenario())


def test_releasing_twice_is_harmless() -> None:
    async def scenario() -> None:
        turns = Turns(max_waiting=1)
        turn = await turns.acquire()
        waiter = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        turn.release()
        turn.release()  # must not hand the model to anyone else or mark it idle
        held = await waiter
        assert turns.busy
        held.release()
        assert not turns.busy

    run(scenario())
