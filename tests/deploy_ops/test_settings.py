"""Host data → node settings: defaults, checks, and the refusal to download unchecked."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from deploy.artifacts import check_local_artifact
from deploy.settings import (
    OPEN_NODE_KEYS,
    Role,
    ServiceManager,
    SettingsError,
    archive_stem,
    default_apt_packages,
    node_settings,
)
from runner.node._cfg import SCALAR_KEYS

SHA = "ab" * 32
CHECKED = {
    "ts_server_sha256": SHA,
    "ts_server_size": 1000,
    "model_sha256": "CD" * 32,
    "model_size": 7_640_000_000,
}


def test_ts_server_defaults_are_the_old_tools_release_and_model() -> None:
    s = node_settings(CHECKED, role=Role.ts_server)
    assert s.ts_server is not None and s.model is not None
    assert s.ts_server.url == "https://bellard.org/ts_server/ts_server_free-2023-07-21.tar.gz"
    assert s.ts_server.filename == "ts_server_free-2023-07-21.tar.gz"
    assert s.model.url == (
        "https://huggingface.co/fbellard/ts_server/resolve/main/llama2_13B_chat_q4.bin"
    )
    assert s.model.sha256 == "cd" * 32  # normalised to lower case
    assert s.model_name == "llama2_13B_chat"
    assert s.model_filename == "/opt/ts_server/models/llama2_13B_chat_q4.bin"
    assert s.release_dir == PurePosixPath("/opt/ts_server/ts_server_free-2023-07-21")
    assert s.exec_command == (
        "/opt/ts_server/ts_server_free-2023-07-21/ts_server",
        "/opt/ts_server/ts_server.cfg",
    )
    assert (s.port, s.bind_addr, s.service_user, s.n_threads) == (
        8088,
        "0.0.0.0",
        "ts_server",
        None,
    )
    assert s.service_manager is ServiceManager.auto
    assert s.allowed_clients is None and s.firewall


def test_open_node_defaults_serve_the_packaged_model_from_a_venv() -> None:
    s = node_settings({}, role=Role.open_node)
    assert s.model is None and s.ts_server is None
    assert (s.model_name, s.model_filename) == ("smollm2", "@smollm2")
    assert s.exec_command == (
        "/opt/ts_node/venv/bin/python",
        "-m",
        "runner.node",
        "/opt/ts_node/ts_server.cfg",
    )
    assert s.wheelhouse == Path("wheelhouse")
    assert s.firewall_chain == "ts_node-in"
    # Left out of ts_server.cfg unless set: the node's own defaults apply.
    assert (s.n_threads, s.n_parallel, s.n_ctx, s.max_queue) == (None, None, None, None)


def test_open_node_keys_are_read() -> None:
    s = node_settings({"n_parallel": 8, "n_ctx": 4096, "max_queue": 0}, role=Role.open_node)
    assert (s.n_parallel, s.n_ctx, s.max_queue) == (8, 4096, 0)


OPEN_NODE_BAD: dict[str, tuple[dict[str, Any], str]] = {
    "no slots": ({"n_parallel": 0}, "n_parallel: expected a whole number in 1..256, got 0"),
    "too many slots": ({"n_parallel": 257}, "n_parallel: expected a whole number in 1..256"),
    "slots as text": ({"n_parallel": "8"}, "n_parallel: expected a whole number"),
    "slots as bool": ({"n_parallel": True}, "n_parallel"),
    "tiny context": ({"n_ctx": 32}, "n_ctx: expected a whole number in 64..1048576, got 32"),
    "negative queue": ({"max_queue": -1}, "max_queue: expected a whole number in 0..1048576"),
    "float queue": ({"max_queue": 1.5}, "max_queue"),
    "typo": ({"n_paralel": 8}, "n_paralel: unknown key (did you mean n_parallel?)"),
    "queue typo": ({"max_queues": 8}, "max_queues: unknown key (did you mean max_queue?)"),
    "cfg_extra clash": ({"cfg_extra": {"n_parallel": 2}}, "n_parallel is set by its own key"),
}


@pytest.mark.parametrize(
    ("extra", "message"), list(OPEN_NODE_BAD.values()), ids=list(OPEN_NODE_BAD)
)
def test_bad_open_node_data_is_one_line_naming_the_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        node_settings(extra, role=Role.open_node)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("key", sorted(OPEN_NODE_KEYS))
def test_open_node_keys_are_refused_for_ts_server(key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        node_settings({**CHECKED, key: 4}, role=Role.ts_server)
    message = str(caught.value)
    assert message.startswith(f"{key}: only the open node (deploy/open_node.py) reads it")
    assert "\n" not in message


@pytest.mark.parametrize("key", sorted(OPEN_NODE_KEYS))
def test_open_node_ranges_are_the_nodes_own(key: str) -> None:
    """Whatever the deploy accepts the node accepts, and the reverse at the edges."""
    low, high = OPEN_NODE_KEYS[key]
    check = SCALAR_KEYS[key]
    assert check(low) is None and check(high) is None
    assert check(low - 1) is not None and check(high + 1) is not None


@pytest.mark.parametrize(
    ("missing", "words"),
    [
        ("ts_server_sha256", ["ts_server tarball", "ts_server_sha256", "sha256.txt"]),
        ("ts_server_size", ["ts_server_size", "Content-Length"]),
        ("model_sha256", ["model file", "llama2_13B_chat_q4.bin", "model's page"]),
        ("model_size", ["model_size"]),
    ],
)
def test_download_without_checksum_is_refused_with_where_to_find_it(
    missing: str, words: list[str]
) -> None:
    data = {k: v for k, v in CHECKED.items() if k != missing}
    with pytest.raises(SettingsError) as caught:
        node_settings(data, role=Role.ts_server)
    message = str(caught.value)
    assert message.startswith("refusing to download")
    assert all(word in message for word in words), message
    assert "\n" not in message


def test_local_artifacts_need_no_checksum(tmp_path: Path) -> None:
    tarball = tmp_path / "ts_server_free-2024-01-20.tar.gz"
    model = tmp_path / "tiny.bin"
    tarball.write_bytes(b"tar")
    model.write_bytes(b"model")
    s = node_settings(
        {"ts_server_local": str(tarball), "model_local": str(model)}, role=Role.ts_server
    )
    assert s.ts_server is not None and s.ts_server.local == tarball and s.ts_server.url is None
    assert s.release_dir.name == "ts_server_free-2024-01-20"
    assert s.model_filename == "/opt/ts_server/models/tiny.bin"


def test_a_local_artifact_is_checked_when_a_checksum_is_given(tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"model")
    tarball = {"ts_server_sha256": SHA, "ts_server_size": 1000}
    wrong_sha = {"model_local": str(model), "model_sha256": "00" * 32}
    s = node_settings({**tarball, **wrong_sha}, role=Role.ts_server)
    assert s.model is not None
    with pytest.raises(SettingsError, match=r"model_local: .* has sha256 \w+, model_sha256 says"):
        check_local_artifact(s.model)
    wrong_size = {"model_local": str(model), "model_size": 99}
    s = node_settings({**tarball, **wrong_size}, role=Role.ts_server)
    assert s.model is not None
    with pytest.raises(SettingsError, match="has 5 bytes, model_size says 99"):
        check_local_artifact(s.model)
    right = {"model_local": str(model), "model_size": 5}
    s = node_settings({**tarball, **right}, role=Role.ts_server)
    assert s.model is not None
    assert check_local_artifact(s.model) == hashlib.sha256(b"model").hexdigest()


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "typo": ({"ts_server_sha265": SHA}, "did you mean ts_server_sha256"),
    "short sha": ({"ts_server_sha256": "abc"}, "not 64 hex digits"),
    "port": ({"node_port": 0}, "node_port: expected a whole number in 1..65535"),
    "port as bool": ({"node_port": True}, "node_port"),
    "threads": ({"n_threads": "4"}, "n_threads"),
    "clients": ({"allowed_clients": ["10.0.0.300"]}, "allowed_clients: '10.0.0.300'"),
    "ipv6 client": ({"allowed_clients": ["fd00::1"]}, "not an IPv4 address or network"),
    "bind": ({"bind_addr": "localhost"}, "bind_addr: 'localhost' is not an IPv4 address"),
    "dir": ({"install_dir": "opt/ts"}, "install_dir: expected an absolute directory"),
    "dir with space": ({"install_dir": "/opt/ts server"}, "install_dir"),
    "manager": ({"service_manager": "upstart"}, "expected one of auto, systemd, supervisor"),
    "user": ({"service_user": "Root User"}, "service_user"),
    "url": ({"ts_server_url": "ftp://x/y.tar.gz"}, "not an http(s) URL"),
    "headers": ({"model_headers": {"Authorization": 1}}, "model_headers"),
    "packages": ({"apt_packages": "curl"}, "apt_packages"),
    "cfg_extra clash": ({"cfg_extra": {"local_port": 1}}, "local_port is set by its own key"),
    "missing local": ({"model_local": "/no/such/file.bin"}, "model_local: no such file"),
}


@pytest.mark.parametrize(("extra", "message"), list(BAD.values()), ids=list(BAD))
def test_bad_host_data_is_one_line_naming_the_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        node_settings({**CHECKED, **extra}, role=Role.ts_server)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_pyinfra_and_runner_keys_are_not_typos() -> None:
    data = {
        **CHECKED,
        "ssh_hostname": "10.0.0.5",
        "ssh_user": "ubuntu",
        "_sudo": True,
        "slots": 2,
        "api_key_env": "KEY",
        "node_address": "10.1.0.5",
    }
    assert node_settings(data, role=Role.ts_server).port == 8088
    assert node_settings({**data, "n_parallel": 4}, role=Role.open_node).port == 8088


def test_allowed_clients_are_canonical_networks() -> None:
    s = node_settings(
        {**CHECKED, "allowed_clients": ["10.0.0.7", "10.1.0.0/16", "10.0.0.7"]},
        role=Role.ts_server,
    )
    assert s.allowed_clients == ("10.0.0.7/32", "10.1.0.0/16")
    s = node_settings({**CHECKED, "allowed_clients": "192.0.2.1"}, role=Role.ts_server)
    assert s.allowed_clients == ("192.0.2.1/32",)


@pytest.mark.parametrize(
    ("role", "distro", "major", "expected"),
    [
        (Role.ts_server, "ubuntu", 22, "libmicrohttpd12"),
        (Role.ts_server, "ubuntu", 24, "libmicrohttpd12t64"),
        (Role.ts_server, "debian", 12, "libmicrohttpd12"),
        (Role.ts_server, "debian", 13, "libmicrohttpd12t64"),
        (Role.open_node, "ubuntu", 24, "python3-venv"),
        (Role.open_node, "debian", 12, "libgomp1"),  # xllamacpp's library links OpenMP
    ],
)
def test_default_packages_follow_the_release(
    role: Role, distro: str, major: int, expected: str
) -> None:
    assert expected in default_apt_packages(role, distro=distro, major=major)


BUILD_TOOLS = {"build-essential", "cmake", "gcc", "g++", "make", "ninja-build", "python3-dev"}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("distro", "major"), [("ubuntu", 22), ("ubuntu", 24), ("debian", 12)])
def test_no_node_gets_a_compiler(role: Role, distro: str, major: int) -> None:
    """llama.cpp arrives prebuilt (the xllamacpp wheel); pip and Python live in the venv."""
    names = set(default_apt_packages(role, distro=distro, major=major))
    assert not names & BUILD_TOOLS
    assert not {name for name in names if name.startswith(("gcc-", "g++-", "clang", "python3-pip"))}


@pytest.mark.parametrize(
    ("filename", "stem"),
    [
        ("ts_server_free-2023-07-21.tar.gz", "ts_server_free-2023-07-21"),
        ("ts_server.tgz", "ts_server"),
        ("plain", "plain"),
    ],
)
def test_archive_stem(filename: str, stem: str) -> None:
    assert archive_stem(filename) == stem
