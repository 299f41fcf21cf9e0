"""One runner per job: the journal's lock refuses a second holder and dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner._errors import JournalLocked, StorageError
from runner._lock import JobLock

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_holder_is_refused_naming_the_journal_and_the_holders_pid(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal" / "job.jsonl"
    with JobLock(journal) as held:
        assert held.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(JournalLocked) as caught:
            JobLock(journal).__enter__()
    message = str(caught.value)
    assert str(journal) in message and f"pid {os.getpid()}" in message and "\n" not in message
    with JobLock(journal):  # released at the end of the first
        pass


def test_a_lock_left_by_a_killed_runner_does_not_block(tmp_path: Path) -> None:
    journal = tmp_path / "job.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from runner._lock import JobLock\n"
            "JobLock(Path(sys.argv[1])).__enter__(); print('HELD', flush=True); time.sleep(60)",
            str(journal),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "HELD\n"
        with pytest.raises(JournalLocked, match=f"pid {holder.pid}"):
            JobLock(journal).__enter__()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    assert (tmp_path / "job.jsonl.lock").read_text() == f"{holder.pid}\n"  # the file stays
    with JobLock(journal) as lock:  # but not the lock
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_lock_under_a_file_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=r"file/job.jsonl.lock: cannot create the lock file"):
        JobLock(tmp_path / "file" / "job.jsonl").__enter__()
