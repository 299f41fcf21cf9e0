"""The run directory's housekeeping: an earlier run's files set aside when a directory is
reused, and the ``latest_<job>`` link beside a job's run directories.

``outputs/runs/latest_<job>`` → ``<date>/<time>_<job>`` is the job's newest run, updated as
each run starts. Only a run directory laid out the default way (``<runs>/<date>/<time>_<job>``, see
``conf/config.yaml``) gets one; a shard's link keeps the shard's suffix
(``latest_<job>_shard-I-of-N``). The link is relative, so the tree can be moved, and it is
replaced atomically: a new link is made beside it and renamed over it, so a reader follows
the old run or the new one, never nothing. Where symlinks cannot be made (some filesystems,
Windows without the privilege) the link is skipped, with a debug log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from ._batch_output import FILES as BATCH_FILES
from ._report_page import FILES as PAGE_FILES

log = logging.getLogger("runner")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# What a run writes into its directory, besides the job's output file and the nodes' logs.
RUN_FILES = ("results.jsonl", "report.json", *PAGE_FILES, *BATCH_FILES)
_RUN = re.compile(r"[0-9-]+_(?P<job>.+)")  # <time>_<job>[_shard-I-of-N]


def link_latest(run_dir: Path) -> Path | None:
    """Point ``<runs>/latest_<job>`` at ``run_dir``; returns the link, or ``None`` when the
    run directory is not laid out as ``<runs>/<date>/<time>_<job>`` or no link could be
    made."""
    found = _RUN.fullmatch(run_dir.name)
    if found is None or not _DATE.fullmatch(run_dir.parent.name):
        return None
    link = run_dir.parent.parent / f"latest_{found['job']}"
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        os.symlink(Path(run_dir.parent.name) / run_dir.name, temporary, target_is_directory=True)
        os.replace(temporary, link)
    except (OSError, NotImplementedError) as exc:
        log.debug("no %s link (symlinks not supported here?): %s", link, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return None
    return link


def set_aside_earlier_run(run_dir: Path, output: str | None) -> Path | None:
    """Move an earlier run's files out of the way when a run directory is reused
    (``hydra.run.dir=`` pinned), so this run's files describe this run alone and nothing of
    the earlier one is overwritten (``output``: the job's consolidated output file, if it
    has one). Returns where they went, if anywhere."""
    present = [
        run_dir / name for name in (*RUN_FILES, output) if name and (run_dir / name).exists()
    ]
    if not present:
        return None
    n = 1
    while (run_dir / f"previous-{n}").exists():
        n += 1
    destination = run_dir / f"previous-{n}"
    destination.mkdir()
    for path in present:
        path.rename(destination / path.name)
    return destination
