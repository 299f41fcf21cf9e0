"""The local cluster: servers start, answer, and are gone afterwards whatever happens."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from runner._errors import ConfigError
from runner._local import LocalNode, _check_arguments, local_cluster
from runner._node_process import NodeStarter
from runner._node_watch import listens_on, wait_ready
from tests._realnode import REPO, model_ready, node_env


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


_EARLIER: set[int] = set()  # children alive before the test (a session-wide node, say)


@pytest.fixture(autouse=True)
def _children_before() -> None:
    _EARLIER.clear()
    _EARLIER.update(p.pid for p in psutil.Process().children(recursive=True))


def servers_left() -> list[psutil.Process]:
    """Server processes started by this test that are still around."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if p.pid not in _EARLIER and not gone(p.pid)]


@pytest.fixture
def needs_model() -> None:
    if reason := model_ready():
        pytest.skip(reason)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"server": "vllm"}, "cluster.local.server: expected one of textsynth, openai"),
        ({"nodes": -1}, "cluster.local.nodes: expected 0 (one per core) or more, got -1"),
        ({"threads": -1}, "cluster.local.threads: expected 0 (share the cores) or more, got -1"),
        ({"parallel": -1}, "cluster.local.parallel: expected 0 (the node's default) or more"),
        ({"model_path": "/nonexistent/m.gguf"}, "cluster.local.model_path: no such file"),
    ],
)
def test_bad_arguments_fail_before_starting_anything(arguments: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)), local_cluster(**arguments):
        pass
    assert servers_left() == []


def test_an_unusable_log_dir_is_a_config_error(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    with (
        pytest.raises(ConfigError, match=r"cannot use .* for the local nodes' logs"),
        local_cluster(nodes=1, model_path=str(model), log_dir=model / "logs"),
    ):
        pass
    assert servers_left() == []


def test_zero_nodes_means_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert _check_arguments(nodes=0, threads=1, parallel=0, server="textsynth", engine="e") == 6
    assert _check_arguments(nodes=3, threads=2, parallel=4, server="openai", engine="e") == 3


def test_a_listening_socket_belongs_to_the_process_holding_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listens_on(os.getpid(), port)
            assert not listens_on(child.pid, port)
        finally:
            child.kill()
            child.wait()
    assert not listens_on(os.getpid(), port)  # closed: nobody listens


def test_a_stale_server_answering_on_the_port_does_not_make_a_node_ready(
    tmp_path: Path,
) -> None:
    """A previous node still holding the port answers /health with 200; the node being
    started (here a process that never listens) is not ready for that."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    stale = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=stale.serve_forever, daemon=True).start()
    starter = NodeStarter(
        index=0, server="textsynth", model=tmp_path / "m.gguf", engine="m", threads=1,
        parallel=1, api_key=None, folder=tmp_path, track=lambda _: None,
    )  # fmt: skip
    starter.port = stale.server_address[1]
    starter.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert (
            httpx.get(f"http://127.0.0.1:{starter.port}/health", trust_env=False).status_code == 200
        )
        with pytest.raises(ConfigError, match="was not ready within 1 s"):
            wait_ready([starter], api_key=None, timeout=1)
    finally:
        starter.process.kill()
        starter.process.wait()
        stale.shutdown()
        stale.server_close()


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_two_nodes_answer_and_are_gone_after_exit(tmp_path: Path) -> None:
    with local_cluster(nodes=2, log_dir=tmp_path) as nodes:
        assert [n.name for n in nodes] == ["local-1", "local-2"]
        assert len({n.port for n in nodes}) == 2
        for node in nodes:
            assert isinstance(node, LocalNode) and node.host == "127.0.0.1"
            body = {"prompt": "Hello", "max_tokens": 2}
            answer = httpx.post(f"{node.url}/v1/engines/smollm2/completions", json=body, timeout=30)
            assert answer.status_code == 200 and answer.json()["reached_end"] is True
            assert node.log_path.parent == tmp_path
        pids = [n.pid for n in nodes]
        assert not any(gone(pid) for pid in pids)
    assert all(gone(pid) for pid in pids)
    assert servers_left() == []
    assert "listening on" in (tmp_path / "local-1.log").read_text()


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_nodes_are_gone_after_an_exception() -> None:
    pids: list[int] = []

    def use_then_fail() -> None:
        with local_cluster(nodes=1, api_key="k-456") as nodes:
            pids.extend(n.pid for n in nodes)
            url = f"{nodes[0].url}/v1/engines/smollm2/completions"
            body = {"prompt": "Hi", "max_tokens": 1}
            assert httpx.post(url, json=body, timeout=30).status_code == 401
            key = {"Authorization": "Bearer k-456"}
            assert httpx.post(url, json=body, headers=key, timeout=30).status_code == 200
            assert "k-456" not in " ".join(psutil.Process(pids[0]).cmdline())
            raise KeyError("boom")

    with pytest.raises(KeyError):
        use_then_fail()
    assert pids and all(gone(pid) for pid in pids)
    assert servers_left() == []


PARENT = """
import json, sys, time
from pathlib import Path
from runner._local import local_cluster

with local_cluster(nodes=2, log_dir=Path(sys.argv[1])) as nodes:
    print(json.dumps([n.pid for n in nodes]), flush=True)
    time.sleep(600)
"""


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_nodes_die_when_the_runner_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=node_env(),
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2 and not any(gone(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]
    assert wait_gone(pids), [psutil.Process(p).cmdline() for p in pids if not gone(p)]


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_a_server_that_cannot_start_is_a_config_error_quoting_its_log(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_text("not a model")
    with pytest.raises(ConfigError) as caught, local_cluster(nodes=2, model_path=str(junk)):
        pass
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("local textsynth node local-")
    assert "exited with status 2 while starting" in message
    assert "models[0].filename" in message  # the gist of the node's own error line
    assert servers_left() == []


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_a_server_not_ready_in_time_is_a_config_error() -> None:
    with (
        pytest.raises(ConfigError, match=r"was not ready within 0.01 s"),
        local_cluster(nodes=1, ready_timeout=0.01),
    ):
        pass
    assert servers_left() == []


@pytest.mark.model
@pytest.mark.usefixtures("needs_model")
def test_openai_server_lists_the_model_and_chats_behind_a_key(tmp_path: Path) -> None:
    key = {"Authorization": "Bearer k-123"}
    with local_cluster(nodes=1, server="openai", api_key="k-123", log_dir=tmp_path) as nodes:
        (node,) = nodes
        models = httpx.get(f"{node.url}/v1/models", headers=key, timeout=10)
        assert [m["id"] for m in models.json()["data"]] == ["smollm2"]
        assert httpx.get(f"{node.url}/v1/models", timeout=10).status_code == 401
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(
            f"{node.url}/v1/chat/completions",
            json=body | {"max_tokens": 4, "seed": 1},
            headers=key,
            timeout=30,
        )
        assert answer.status_code == 200
        assert isinstance(answer.json()["choices"][0]["message"]["content"], str)
        pid = node.pid
        assert "k-123" not in " ".join(psutil.Process(pid).cmdline())
    assert gone(pid)
    assert "k-123" not in (tmp_path / "local-1.log").read_text()


def answers(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


@pytest.mark.usefixtures("needs_model")
def test_a_node_that_dies_is_started_again_on_its_port_a_bounded_number_of_times() -> None:
    restarts: list[tuple[str, int]] = []
    with local_cluster(
        nodes=1, threads=1, max_restarts=1, on_restart=lambda n, c, why: restarts.append((n, c))
    ) as (node,):
        first = psutil.Process(node.pid)
        first.kill()
        assert wait_gone([first.pid])
        assert answers(node.url, timeout=60), "the node was not started again"
        assert restarts == [("local-1", 1)]
        (second,) = [p for p in servers_left() if p.pid != first.pid]
        second.kill()
        assert wait_gone([second.pid])
        time.sleep(1.5)  # three looks of the watch: no third process
        assert not answers(node.url, timeout=0.5) and restarts == [("local-1", 1)]
    assert servers_left() == []
