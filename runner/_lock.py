"""One runner per job: an exclusive lock next to the job's journal, held for the whole run.

Two runners on the same job would both find the same items missing from the journal and
both send them. So a run takes ``<journal_dir>/<job>.jsonl.lock`` first, without waiting: a
second runner stops at once with one line naming the journal and the pid of the runner that
holds it (written into the lock file).

The lock is the kernel's (``fcntl.flock`` on the open file), so it dies with its process: a
runner killed with SIGKILL leaves the file behind, never the lock, and the next run takes it
at once. (``flock`` is local to one machine: runners on two hosts sharing ``journal_dir``
over NFS may not see each other's lock.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ._errors import JournalLocked, StorageError, storage_errors


class JobLock:
    """The lock of one job's journal, as a context manager.

    Args:
        journal: the job's journal (the store); the lock file is beside it.

    Raises:
        JournalLocked: on entry, when another process holds the lock.
        StorageError: on entry, when the lock file cannot be created or written.
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = journal.with_name(journal.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        with storage_errors(self.path, "create the lock file"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JournalLocked(
                f"{self.journal}: another runner (pid {holder}) is running this job; "
                "wait for it to end, or stop it, then run again"
            ) from None
        try:
            with storage_errors(self.path, "write the lock file"):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except StorageError:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (unlinking it would race)
            self._fd = None


def _holder(fd: int) -> str:
    """The pid written in the lock file by its holder (``unknown`` if not written yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return text if text.isdigit() else "unknown"
