"""A lab of SSH hosts in network namespaces, on this machine only.

::

    root namespace:  ip route blackhole 10.213.0.0/24        (installed first, removed last)
    tslab-ctl:       bridge tslab-br 10.213.0.1/24            (pyinfra, the runner, HTTP)
    tslab-h1..h3:    eth0 10.213.0.11..13/24 (veth to the bridge); sshd -D under
                     unshare --uts --mount --pid --fork --kill-child --mount-proc, with its own
                     hostname and private /opt, /tmp, /etc (a copy), /root and /run

Hosts share /usr and the dpkg database with this machine, so apt must be a no-op there
(``.ci/lab-setup.sh`` installs what the deploys want). No namespace has a route beyond the lab
subnet, and the blackhole route makes a lab address used by mistake from the root namespace
fail locally. Every command here is bounded in time. :meth:`Lab.close` tears everything down;
:func:`remove_leftovers` cleans up after a run that crashed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "tslab"
SUBNET = "10.213.0.0/24"
CTL = f"{PREFIX}-ctl"
BRIDGE = f"{PREFIX}-br"
CTL_ADDRESS = "10.213.0.1"
HOSTS = {"lab-h1": "10.213.0.11", "lab-h2": "10.213.0.12", "lab-h3": "10.213.0.13"}
WORK_DIR = Path("/var/tmp")
NEEDED = ("ip", "unshare", "sshd", "ssh", "ssh-keygen", "curl", "iptables", "start-stop-daemon")


class LabError(RuntimeError):
    """Raised when the lab cannot be built (missing tools, not root, sshd not answering)."""


def run(
    *command: str | os.PathLike[str],
    timeout: float = 60,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; raise with its output if it fails and ``check``."""
    result = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise LabError(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def netns(name: str) -> list[str]:
    return ["ip", "netns", "exec", name]


def host_ns(host: str) -> str:
    return f"{PREFIX}-{host.removeprefix('lab-')}"


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the SSH lab needs root (network namespaces, unshare, sshd)")
    missing = [tool for tool in NEEDED if shutil.which(tool) is None and not _sbin(tool)]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run `bash .ci/lab-setup.sh` first")


def _sbin(tool: str) -> bool:
    return any(Path(d, tool).exists() for d in ("/usr/sbin", "/sbin"))


def remove_leftovers() -> None:
    """Remove what a crashed earlier run left: its namespaces, processes, route, folders."""
    listing = run("ip", "netns", "list", timeout=10).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}-"):
            _kill_namespace(name)
    run("ip", "route", "del", "blackhole", SUBNET, check=False, timeout=10)
    for folder in WORK_DIR.glob(f"{PREFIX}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _kill_namespace(name: str) -> None:
    pids = run("ip", "netns", "pids", name, check=False, timeout=10).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if run("ip", "netns", "del", name, check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"could not delete network namespace {name}")


@dataclass
class Lab:
    """A running lab. Build it with :func:`build`; always :meth:`close` it."""

    root: Path
    key: Path = field(init=False)
    known_hosts: Path = field(init=False)
    launchers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    route: bool = False

    def __post_init__(self) -> None:
        self.key = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"

    # --- running things inside the lab ------------------------------------------------------

    def in_ctl(
        self, *command: str | os.PathLike[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the controller namespace (where pyinfra and the runner run)."""
        return run(*netns(CTL), *command, **kwargs)

    def in_host_ns(
        self, host: str, *command: str | os.PathLike[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a host's network namespace (as a client on that host's address)."""
        return run(*netns(host_ns(host)), *command, **kwargs)

    def ssh(self, host: str, command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a lab host over SSH, from the controller namespace."""
        return self.in_ctl(
            "ssh",
            "-i",
            self.key,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            f"root@{HOSTS[host]}",
            command,
            **kwargs,
        )

    def ssh_data(self) -> dict[str, Any]:
        """pyinfra host data that reaches the lab hosts with the lab's key."""
        return {
            "ssh_user": "root",
            "ssh_key": str(self.key),
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "accept-new",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }

    def write_inventory(
        self,
        name: str,
        hosts: Mapping[str, Mapping[str, Any]],
        group_data: Mapping[str, Any],
    ) -> Path:
        """Write a pyinfra inventory (group ``ts_servers``) into the lab folder."""
        entries = "".join(
            f"        ({host!r}, {{'ssh_hostname': {HOSTS[host]!r}, **{dict(data)!r}}}),\n"
            for host, data in hosts.items()
        )
        text = (
            f'"""Lab inventory {name}: hosts in network namespaces (tests/lab)."""\n\n'
            f"ts_servers = (\n    [\n{entries}    ],\n"
            f"    {{**{self.ssh_data()!r}, **{dict(group_data)!r}}},\n)\n"
        )
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def serve_http(self, folder: Path, *, port: int = 8000) -> tuple[str, subprocess.Popen[bytes]]:
        """Serve a folder over HTTP from the controller namespace; returns its base URL and
        the server (stop it with :meth:`stop`; :meth:`close` stops it otherwise)."""
        log = (self.root / f"http-{port}.log").open("wb")
        server = subprocess.Popen(
            [
                *netns(CTL),
                "python3",
                "-m",
                "http.server",
                str(port),
                "--bind",
                CTL_ADDRESS,
                "--directory",
                str(folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.servers.append(server)
        url = f"http://{CTL_ADDRESS}:{port}"
        _wait_for(
            lambda: (
                self.in_ctl(
                    "curl", "-sf", "-m", "2", "-o", "/dev/null", url + "/", check=False, timeout=10
                ).returncode
                == 0
            ),
            what=f"HTTP server on {url}",
            timeout=15,
        )
        return url, server

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop a server started in the lab."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.servers.remove(process)

    # --- building and tearing down ------------------------------------------------------------

    def close(self) -> None:
        """Stop everything the lab started and remove it, in the safe order."""
        for process in [*self.servers, *self.launchers]:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)  # unshare --fork ignores SIGTERM
        for process in [*self.servers, *self.launchers]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for name in reversed(self.namespaces):
            _kill_namespace(name)
        self.namespaces.clear()
        if self.route:
            run("ip", "route", "del", "blackhole", SUBNET, check=False, timeout=10)
            self.route = False
        shutil.rmtree(self.root, ignore_errors=True)

    def _network(self) -> None:
        # Safety first: lab addresses used from the root namespace go nowhere.
        run("ip", "route", "replace", "blackhole", SUBNET, timeout=10)
        self.route = True
        self._add_namespace(CTL)
        run("ip", "-n", CTL, "link", "set", "lo", "up", timeout=10)
        run("ip", "-n", CTL, "link", "add", BRIDGE, "type", "bridge", timeout=10)
        run("ip", "-n", CTL, "addr", "add", f"{CTL_ADDRESS}/24", "dev", BRIDGE, timeout=10)
        run("ip", "-n", CTL, "link", "set", BRIDGE, "up", timeout=10)
        for index, (host, address) in enumerate(HOSTS.items(), start=1):
            ns, veth = host_ns(host), f"{PREFIX}-v{index}"
            self._add_namespace(ns)
            run(
                "ip",
                "-n",
                CTL,
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
                timeout=10,
            )
            run("ip", "-n", CTL, "link", "set", veth, "master", BRIDGE, "up", timeout=10)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0", timeout=10)
            run("ip", "-n", ns, "link", "set", "eth0", "up", timeout=10)
            run("ip", "-n", ns, "link", "set", "lo", "up", timeout=10)

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name, timeout=10)
        self.namespaces.append(name)

    def _keys(self) -> None:
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tslab", "-f", self.key)
        (self.root / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        self.known_hosts.touch()

    def _start_host(self, host: str, address: str) -> None:
        base = self.root / host
        for sub in ("opt", "tmp", "root"):
            (base / sub).mkdir(parents=True)
        (base / "tmp").chmod(0o1777)
        (base / "root").chmod(0o700)
        run("cp", "-a", "/etc", base / "etc", timeout=60)
        (base / "etc" / "hostname").write_text(f"{host}\n")
        host_key = base / "ssh_host_ed25519_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host, "-f", host_key)
        (base / "sshd_config").write_text(
            textwrap.dedent(
                f"""\
                ListenAddress {address}
                Port 22
                HostKey {host_key}
                AuthorizedKeysFile {self.root / "authorized_keys"}
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                PidFile none
                MaxSessions 50
                MaxStartups 50
                Subsystem sftp internal-sftp
                """
            )
        )
        script = " && ".join(
            [
                f"hostname {host}",
                f"mount --bind {base / 'opt'} /opt",
                f"mount --bind {base / 'tmp'} /tmp",
                f"mount --bind {base / 'etc'} /etc",
                f"mount --bind {base / 'root'} /root",
                "mount -t tmpfs -o mode=755 tmpfs /run",
                "mkdir -p /run/sshd",
                f"exec /usr/sbin/sshd -D -e -f {base / 'sshd_config'}",
            ]
        )
        log = (self.root / f"{host}-sshd.log").open("wb")
        launcher = subprocess.Popen(
            [
                *netns(host_ns(host)),
                "unshare",
                "--uts",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                script,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.launchers.append(launcher)

    def _wait_for_sshd(self) -> None:
        for host in HOSTS:
            _wait_for(
                lambda host=host: self.ssh(host, "true", check=False, timeout=10).returncode == 0,
                what=f"sshd on {host} (see {self.root / (host + '-sshd.log')})",
                timeout=30,
            )


def _wait_for(ready: Any, *, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """Build the lab, yield it, and tear it down whatever happens."""
    check_prerequisites()
    remove_leftovers()
    built = Lab(Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir=WORK_DIR)))
    try:
        built._network()
        built._keys()
        for host, address in HOSTS.items():
            built._start_host(host, address)
        built._wait_for_sshd()
        yield built
    finally:
        built.close()


def pyinfra_totals(output: str) -> dict[str, int]:
    """The 'Grand total' row of pyinfra's results: hosts, changed (success), error, no change."""
    for line in reversed(_plain(output).splitlines()):
        words = line.split()
        if words[:2] == ["Grand", "total"] and len(words) >= 6:
            values = [0 if w == "-" else int(w) for w in words[2:6]]
            return dict(zip(("hosts", "changed", "error", "no_change"), values, strict=True))
    raise AssertionError(f"no results table in pyinfra's output:\n{output[-3000:]}")


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
