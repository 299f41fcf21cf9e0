"""Where the files a job names are found: absolute paths as they are, relative ones looked up
in the job's folder, the current directory, then the prompts directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ._config import RunConfig
from ._errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(value: str, *, bases: Sequence[Path], label: str) -> Path:
    """A path from the config: absolute (``~`` expanded) as it is, else relative to the first
    of ``bases`` that holds it.

    Raises:
        ConfigError: no path, or none of ``bases`` holds it: one line with the path as the
            user wrote it and the folders searched.
    """
    if not value:
        raise ConfigError(f"{label}: no path given")
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    searched = ", ".join(str(b) for b in dict.fromkeys(bases))
    raise ConfigError(f"{label}: {value}: file not found (looked in {searched})")


def search_folders(cfg: RunConfig, *, job_dir: Path | None = None) -> list[Path]:
    """Where a job's relative paths are looked up, in order: the folder of the job's YAML
    file (when known), the current directory, then the prompts directory."""
    folders = [job_dir] if job_dir is not None else []
    return [*folders, Path.cwd(), prompts_dir(cfg)]


def prompts_dir(cfg: RunConfig) -> Path:
    """The prompts directory: as configured, from the current directory or the project."""
    path = Path(os.path.expanduser(cfg.prompts_dir))
    if path.is_absolute() or path.exists():
        return path.resolve()
    return PROJECT_ROOT / path
