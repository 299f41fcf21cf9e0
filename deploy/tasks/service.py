"""Run the node as a service that restarts on failure, and restarts on deploy only when needed.

systemd where it runs (a unit with ``Restart=on-failure``); elsewhere (containers, the test
lab) start-stop-daemon and a supervisor loop. The switch is ``service_manager`` in host data,
``auto`` by default: systemd when ``/run/systemd/system`` exists.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from ..facts import ServiceManager as ServiceManagerFact
from ..operations import daemon
from ..operations.firewall import restore_script
from ..settings import NodeSettings, ServiceManager

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
RESTART_DELAY = 5


def manager_for(s: NodeSettings) -> ServiceManager:
    if s.service_manager is not ServiceManager.auto:
        return s.service_manager
    found = host.get_fact(ServiceManagerFact)
    return ServiceManager.systemd if found == "systemd" else ServiceManager.supervisor


@deploy("Run the node")
def run(s: NodeSettings, *, restart_when: list[OperationMeta], sources: list[str] | None) -> str:
    """Install and start the service; restart it when an operation in ``restart_when``
    changed something. Returns a shell command that succeeds while the node runs."""
    command = shlex.join(s.exec_command)
    if manager_for(s) is ServiceManager.systemd:
        return _systemd(s, command=command, restart_when=restart_when, sources=sources)
    script = files.template(
        name=f"Install the supervisor script {s.bin_dir}/{s.service_name}-supervise",
        src=str(TEMPLATES / "supervise.sh.j2"),
        dest=str(s.bin_dir / f"{s.service_name}-supervise"),
        mode="755",
        service_name=s.service_name,
        command=command,
        console_log=shlex.quote(str(s.console_log)),
        restart_delay=RESTART_DELAY,
    )
    supervised = {
        "pidfile": str(s.pidfile),
        "script": str(s.bin_dir / f"{s.service_name}-supervise"),
        "chdir": str(s.install_dir),
        "user": s.service_user,
    }
    daemon.service(
        name="Restart the node (its program, model or configuration changed)",
        restarted=True,
        _if=any_changed(*restart_when, script),
        **supervised,
    )
    daemon.service(name="Start the node if it is not running", running=True, **supervised)
    return f'kill -0 "$(cat {shlex.quote(str(s.pidfile))})"'


def _systemd(
    s: NodeSettings, *, command: str, restart_when: list[OperationMeta], sources: list[str] | None
) -> str:
    firewall_script = None
    if sources is not None:
        firewall_script = str(s.bin_dir / f"{s.service_name}-firewall")
        files.template(
            name=f"Install the firewall script {firewall_script} (run before start)",
            src=str(TEMPLATES / "firewall.sh.j2"),
            dest=firewall_script,
            mode="755",
            service_name=s.service_name,
            sources=sources,
            port=s.port,
            script=restore_script(s.firewall_chain, s.port, sources),
        )
    unit = files.template(
        name=f"Install the systemd unit {s.service_name}.service",
        src=str(TEMPLATES / "node.service.j2"),
        dest=f"/etc/systemd/system/{s.service_name}.service",
        mode="644",
        service_name=s.service_name,
        description=f"TextSynth-API node {s.service_name} ({s.model_name}, port {s.port})",
        user=s.service_user,
        workdir=str(s.install_dir),
        firewall_script=firewall_script,
        command=command,
        console_log=str(s.console_log),
    )
    systemd.daemon_reload(name="Reload systemd (the unit changed)", _if=unit.did_change)
    server.shell(
        name="Restart the node (its program, model, configuration or unit changed)",
        commands=[f"systemctl restart {shlex.quote(s.service_name)}.service"],
        _if=any_changed(*restart_when, unit),
    )
    systemd.service(
        name="Enable the node and start it if it is not running",
        service=f"{s.service_name}.service",
        running=True,
        enabled=True,
    )
    return f"systemctl is-active --quiet {shlex.quote(s.service_name)}.service"
