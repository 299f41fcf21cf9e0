"""A venv filled from a wheelhouse already on the host: no compiler, no package index.

The wheelhouse is built on the controller (``python -m deploy.wheelhouse``) and uploaded by
the deploy, with a ``SHA256SUMS`` file the host checks before installing. The venv records the
digest of the set of wheels it was filled from, so it is filled again only when they change.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents

STAMP = ".wheelhouse-sha256"


@operation()
def install(venv: str, wheelhouse: str, digest: str) -> Generator[StringCommand, None, None]:
    """Install every wheel of ``wheelhouse`` into ``venv`` unless it already holds that set.

    + venv: an existing venv on the host
    + wheelhouse: the folder of wheels on the host, with its ``SHA256SUMS``
    + digest: the sha256 of ``SHA256SUMS`` (names the set of wheels)
    """
    stamp = f"{venv}/{STAMP}"
    if host.get_fact(FileContents, path=stamp) == [digest]:
        host.noop(f"{venv} holds wheelhouse {digest[:12]}")
        return
    yield StringCommand(
        "cd", QuoteString(wheelhouse), "&&", "sha256sum", "--quiet", "-c", "SHA256SUMS"
    )
    yield StringCommand(
        "cd",
        QuoteString(wheelhouse),
        "&&",
        "PIP_CONFIG_FILE=/dev/null",
        QuoteString(f"{venv}/bin/pip"),
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--no-deps",
        "--force-reinstall",
        "./*.whl",
    )
    yield StringCommand("echo", digest, ">", QuoteString(stamp))
