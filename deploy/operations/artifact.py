"""Artifacts on a host: a verified download and an unpacked tarball.

pyinfra's ``files.download`` checks a checksum only after moving the file into place and
leaves a file that failed the check where it is. :func:`download` instead writes to
``DEST.part`` (resuming an interrupted transfer), checks size and sha256, removes the part on a
mismatch and fails, and only then moves it to ``DEST``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Generator, Mapping

from pyinfra import host
from pyinfra.api import HiddenValue, QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents

from ..facts import Download

CURL = ("curl", "-fsSL", "--retry", "3", "--retry-delay", "5", "--connect-timeout", "30")


@operation()
def download(
    src: str,
    dest: str,
    sha256: str,
    size: int,
    mode: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Generator[StringCommand, None, None]:
    """Download a file unless it is already there with the right size and sha256.

    + src: the URL
    + dest: the file on the host
    + sha256: its expected sha256 (hex)
    + size: its expected size in bytes
    + mode: permissions of the file
    + headers: HTTP headers (e.g. a token): masked in pyinfra's output

    A file at ``dest`` that does not match is removed and fetched again. A ``dest.part`` left
    by an interrupted run is resumed (restarted if the server cannot resume). A download that
    does not match is removed and the command fails, naming what was expected and found.
    """
    sha256 = sha256.lower()
    part = f"{dest}.part"
    info = host.get_fact(Download, path=dest, size=size) or {}
    if info.get("size") == size and info.get("sha256") == sha256:
        if info.get("part_size") is not None:
            yield StringCommand("rm", "-f", QuoteString(part))
        else:
            host.noop(f"{dest} is there: {size} bytes, sha256 verified")
        return
    if info.get("size") is not None:
        yield StringCommand("rm", "-f", QuoteString(dest))
    yield StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(dest)))

    fetch: list[str | QuoteString] = [*CURL]
    for key, value in sorted((headers or {}).items()):
        fetch += ["-H", QuoteString(HiddenValue(f"{key}: {value}"))]
    part_size = info.get("part_size")
    if part_size is not None and 0 < part_size < size:
        # Resume; a server that ignores ranges makes curl fail: start again from zero.
        resume = StringCommand(*fetch, "-C", "-", "-o", QuoteString(part), QuoteString(src))
        fresh = StringCommand(*fetch, "-o", QuoteString(part), QuoteString(src))
        yield StringCommand(resume, "|| { rm -f", QuoteString(part), "&&", fresh, "; }")
    else:
        if part_size is not None:
            yield StringCommand("rm", "-f", QuoteString(part))
        yield StringCommand(*fetch, "-o", QuoteString(part), QuoteString(src))
    yield verify_command(part, sha256=sha256, size=size, name=posixpath.basename(dest))
    yield StringCommand("mv", "-f", QuoteString(part), QuoteString(dest))
    if mode:
        yield StringCommand("chmod", mode, QuoteString(dest))


def verify_command(path: str, *, sha256: str, size: int, name: str) -> StringCommand:
    """A command that checks a file's size and sha256, and removes it and fails on mismatch."""
    message = (
        f"{name}: download does not match the inventory (expected {size} bytes, sha256 "
        f"{sha256}; got $n bytes, sha256 $h): removed. Check the URL and the checksum."
    )
    return StringCommand(
        "p=",
        QuoteString(path),
        '; n=$(stat -c %s "$p"); h=$(sha256sum "$p" | cut -d" " -f1); ',
        f'if [ "$n" != {size} ] || [ "$h" != {sha256} ]; then rm -f "$p"; ',
        f'echo "{message}" >&2; exit 1; fi',
        _separator="",
    )


@operation()
def unpack(archive: str, dest: str, sha256: str) -> Generator[StringCommand, None, None]:
    """Unpack a tarball's top folder into ``dest``, once per archive checksum.

    + archive: the tarball on the host
    + dest: the folder to create (replaced as a whole, never half-written)
    + sha256: the archive's sha256, recorded in ``dest/.unpacked-from``
    """
    marker = f"{dest}/.unpacked-from"
    if host.get_fact(FileContents, path=marker) == [sha256]:
        host.noop(f"{dest} is unpacked from {posixpath.basename(archive)}")
        return
    staging = f"{dest}.new"
    yield StringCommand("rm", "-rf", QuoteString(staging))
    yield StringCommand("mkdir", "-p", QuoteString(staging))
    yield StringCommand(
        "tar",
        "-xzf",
        QuoteString(archive),
        "-C",
        QuoteString(staging),
        "--strip-components=1",
        "--no-same-owner",
    )
    yield StringCommand("echo", sha256, ">", QuoteString(f"{staging}/.unpacked-from"))
    yield StringCommand("rm", "-rf", QuoteString(dest))
    yield StringCommand("mv", QuoteString(staging), QuoteString(dest))
