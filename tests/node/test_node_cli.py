"""``python -m runner.node``: start-up failures are one line and a status, readiness is
``Started.``, and the log goes to the configured file too."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._realnode import ENGINE, REPO, free_port, model_ready, node_env


def start_node(
    cfg_path: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner.node", str(cfg_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env or node_env(),
    )


def run_node(cfg_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = start_node(cfg_path, *extra, env=env)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "empty.gguf").write_bytes(b"")
    return tmp_path


def write_cfg(folder: Path, text: str) -> Path:
    path = folder / "node.cfg"
    path.write_text(text, encoding="utf-8")
    return path


MODEL = '[{name: "a", filename: "empty.gguf"}]'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{{models: {MODEL}, port: 80}}", "port: unknown key"),
        (f'{{models: {MODEL}, n_threads: "4"}}', "n_threads: expected an integer, got '4'"),
        ('{models: [{name: "a", filename: "gone.gguf"}]}', "models[0].filename: no such file"),
        ("{models: [", "not valid JSON5"),
        (f'{{models: {MODEL}, api_key: "k"}}', "api_key: not read from the file"),
    ],
)
def test_a_bad_config_exits_2_with_one_line(folder: Path, text: str, expected: str) -> None:
    path = write_cfg(folder, text)
    status, err = run_node(path)
    assert status == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: ")
    assert expected in err


def test_a_missing_config_file_exits_2_with_one_line(folder: Path) -> None:
    status, err = run_node(folder / "absent.cfg")
    assert (status, err.count("\n")) == (2, 1)
    assert "cannot read" in err


def test_an_unset_api_key_variable_exits_2(folder: Path) -> None:
    path = write_cfg(folder, f"{{models: {MODEL}}}")
    status, err = run_node(path, "--api-key-env", "TEST_NODE_NO_SUCH_VARIABLE")
    assert (status, err) == (
        2,
        "error: --api-key-env TEST_NODE_NO_SUCH_VARIABLE: the environment variable is unset "
        "or empty\n",
    )


@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="needs xllamacpp")
def test_a_file_llama_cpp_cannot_load_exits_2_with_one_line(folder: Path) -> None:
    (folder / "junk.gguf").write_text("not a model")
    path = write_cfg(folder, '{models: [{name: "a", filename: "junk.gguf"}]}')
    status, err = run_node(path)
    assert status == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: models[0].filename: ")


def test_help_documents_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runner.node", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=node_env(),
        check=True,
    )
    assert "CONFIG" in done.stdout and "--api-key-env NAME" in done.stdout


@pytest.mark.model
def test_a_taken_port_exits_1_with_one_line(folder: Path) -> None:
    if reason := model_ready():
        pytest.skip(reason)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cfg = {"models": [{"name": ENGINE, "filename": "@smollm2"}], "local_port": port}
        status, err = run_node(write_cfg(folder, json.dumps(cfg)))
    assert status == 1
    assert err.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("error:") == 1


@pytest.mark.model
def test_log_start_prints_started_and_the_log_file_gets_the_lines(folder: Path) -> None:
    if reason := model_ready():
        pytest.skip(reason)
    cfg = {
        "models": [{"name": ENGINE, "filename": "@smollm2"}],
        "local_port": free_port(),
        "log_start": True,
        "log_filename": "logs.txt",
        "cuda": True,
        "gui": False,
    }
    process = start_node(write_cfg(folder, json.dumps(cfg)))
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "Started.\n"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM  # a graceful stop; uvicorn re-raises it
    log = (folder / "logs.txt").read_text()
    assert "ignoring ts_server key 'cuda'" in log and "ignoring ts_server key 'gui'" in log
    assert f"listening on http://127.0.0.1:{cfg['local_port']}" in log
    assert "listening on" in err  # stderr gets the same lines
