"""Prepare a host: packages, the service user, the install folders."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server

from ..settings import NodeSettings, default_apt_packages


@deploy("Prepare the host")
def prepare(s: NodeSettings) -> None:
    """Install the packages the node needs, create its user and folders."""
    packages = s.apt_packages
    if packages is None:
        distro = host.get_fact(LinuxDistribution) or {}
        packages = default_apt_packages(
            s.role, distro=str(distro.get("name") or "").lower(), major=distro.get("major") or 0
        )
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in packages if p not in installed]
    apt.packages(
        name=f"Install {', '.join(packages)}",
        packages=list(packages),
        update=bool(missing),  # no apt-get update when nothing is missing
        cache_time=3600,
    )

    owner = s.service_user
    if owner != "root":
        server.group(name=f"Create the group {owner}", group=owner, system=True)
        server.user(
            name=f"Create the system user {owner}",
            user=owner,
            group=owner,
            system=True,
            home=str(s.install_dir),
            shell="/usr/sbin/nologin",
            ensure_home=False,
            comment=f"{s.service_name} node",
        )

    files.directory(
        name=f"Create {s.install_dir}",
        path=str(s.install_dir),
        user="root",
        group="root",
        mode="755",
    )
    for path in (s.bin_dir, s.run_dir):
        files.directory(
            name=f"Create {path}", path=str(path), user="root", group="root", mode="755"
        )
    files.directory(
        name=f"Create {s.log_dir} (written by {owner})",
        path=str(s.log_dir),
        user=owner,
        group=owner,
        mode="750",
    )
