"""A real node with an API key, one slot and a queue of one: 401 without the key, 503 with
Retry-After when full."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio

from tests._realnode import RunningNode, running_node

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as session:
        yield session


KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def guarded_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    with running_node(
        tmp_path_factory.mktemp("guarded"), api_key=KEY, n_parallel=1, max_queue=1
    ) as node:
        yield node


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", KEY])
def test_a_missing_or_wrong_key_is_a_401(
    client: httpx.Client, guarded_node: RunningNode, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [("POST", guarded_node.endpoint("completions")), ("GET", "/v1/engines")]:
        url = path if path.startswith("http") else guarded_node.url + path
        answer = client.request(method, url, json={"prompt": "Hi"}, headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"error": "authorization: missing or wrong Bearer key"}


def test_the_right_key_is_served_and_never_logged(
    client: httpx.Client, guarded_node: RunningNode
) -> None:
    body = {"prompt": "Hi", "max_tokens": 2}
    answer = client.post(
        guarded_node.endpoint("completions"), json=body, headers=guarded_node.headers
    )
    assert answer.status_code == 200 and answer.json()["reached_end"] is True
    assert client.get(f"{guarded_node.url}/health").status_code == 200  # no key needed
    assert KEY not in guarded_node.log_path.read_text()


async def test_a_full_queue_is_a_503_and_the_queued_request_still_runs(
    guarded_node: RunningNode,
) -> None:
    node = guarded_node
    holding = trio.Event()
    holder = trio.CancelScope()
    results: dict[str, int] = {}

    async with httpx.AsyncClient(timeout=60, headers=node.headers) as client:

        async def hold_the_model() -> None:  # a stream keeps the model until it is closed
            body = {"prompt": "Count: 1, 2,", "max_tokens": 400, "stream": True}
            with holder:
                async with client.stream("POST", node.endpoint("completions"), json=body) as s:
                    async for _ in s.aiter_raw():
                        holding.set()

        async def queued() -> None:
            body = {"prompt": "Hi", "max_tokens": 2}
            answer = await client.post(node.endpoint("completions"), json=body)
            results["queued"] = answer.status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_model)
            await holding.wait()
            nursery.start_soon(queued)
            with trio.fail_after(10):
                # Polling another process's state: there is no event to wait on.
                while (await client.get(f"{node.url}/health")).json()["queue"] != 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            refused = await client.post(node.endpoint("completions"), json={"prompt": "Hi"})
            assert refused.status_code == 503
            assert "busy" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
            holder.cancel()  # the client leaves the stream: the queued request gets the model
    assert results == {"queued": 200}
