"""Files the runner reads whole or replaces whole.

* :func:`read_text_file`: a UTF-8 file read in one go (a template, a schema, an inventory),
  every way of failing a one-line :class:`~runner._errors.ConfigError` naming the file.
* :func:`replace_file`: a file rewritten atomically (``report.json``, the job's output file,
  the journal store after :func:`~runner._journal.drop_records`): the content goes to a
  temporary file beside it, which is fsynced and renamed over it, so a reader or a crash sees
  the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

from ._errors import ConfigError


def read_text_file(path: Path, *, what: str) -> str:
    """The content of a UTF-8 text file.

    Args:
        path: the file.
        what: what the file is, for messages (``"template file"``, ``"schema file"``...).

    Raises:
        ConfigError: the file is missing, a directory, not UTF-8 or cannot be read; the
            message is one line: ``<path>: <what> not found``, ``... is a directory``,
            ``... is not UTF-8 (<reason>)`` or ``<path>: cannot read <what>: <reason>``.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: {what} is a directory") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc


@overload
def replace_file(
    path: Path, *, binary: Literal[False] = False, keep_mode: bool = False
) -> AbstractContextManager[TextIO]: ...
@overload
def replace_file(
    path: Path, *, binary: Literal[True], keep_mode: bool = False
) -> AbstractContextManager[BinaryIO]: ...
def replace_file(
    path: Path, *, binary: bool = False, keep_mode: bool = False
) -> AbstractContextManager[IO[Any]]:
    """Write a new ``path`` atomically: ``with replace_file(path) as out: out.write(...)``.

    The file opened is a temporary file in ``path``'s folder (created if needed). When the
    ``with`` block ends normally it is fsynced and renamed over ``path``, and the folder is
    fsynced so that the rename survives a power cut; when the block raises, it is removed
    and ``path`` is left as it was.

    Args:
        path: the file to replace (or create).
        binary: open the temporary file for bytes instead of UTF-8 text.
        keep_mode: give the new file the permissions of the one it replaces (else it has
            ``tempfile.mkstemp``'s: read and write for the owner only).
    """
    return _replacing(path, binary=binary, keep_mode=keep_mode)


@contextlib.contextmanager
def _replacing(path: Path, *, binary: bool, keep_mode: bool) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            if keep_mode:
                with contextlib.suppress(FileNotFoundError):
                    os.fchmod(out.fileno(), os.stat(path).st_mode & 0o777)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
