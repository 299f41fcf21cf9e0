"""``python -m runner job=<job> cluster=<cluster> ...``: the Hydra entry point.

Hydra composes the configuration (and runs sweeps with ``-m``); this module converts it to
typed objects and hands them to :func:`runner._run.run`. Nothing else imports Hydra.

Exit status: 0 every item succeeded; 1 some items failed; 2 configuration or usage error,
nothing sent; 3 the run stopped because no node could serve (results so far are kept);
4 an internal error; 5 a file the run writes could not be written (a read-only folder, a path
under a file, a full disk: one line names it; results journaled before are kept); 130
interrupted (Ctrl-C); 143 terminated (SIGTERM, as Slurm, Kubernetes and systemd stop a job:
handled as Ctrl-C, see :mod:`runner._signals`).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import hydra
from hydra._internal.utils import get_args_parser  # private, but hydra.main's own
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ._checks import to_run_config
from ._config import register
from ._errors import ConfigError, StorageError
from ._help import keys_help
from ._outcome import EXIT_CONFIG, EXIT_INTERNAL, EXIT_STORAGE, Outcome
from ._run import run
from ._shard import run_dir_suffix
from ._signals import StopSignal, sigterm_as_ctrl_c

log = logging.getLogger("runner")


def _hydra_error(exc: Exception) -> str:
    """What Hydra raised before any run started, in one line: a composition error (its
    lines, and those of the OmegaConf error under it, joined), or ``path: reason`` for an
    ``OSError`` (Hydra could not create the run directory, say)."""
    if isinstance(exc, OSError) and not isinstance(exc, HydraException):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc} (while setting up the run directory)"
    text = str(exc)
    if isinstance(exc.__cause__, OmegaConfBaseException):
        text += "\n" + str(exc.__cause__)
    if not isinstance(exc, HydraException | OmegaConfBaseException):
        text = f"{type(exc).__name__}: {text}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) or "the configuration could not be composed"


class _UsageError(Exception):
    """The command line is not one Hydra's argument parser accepts."""


def _refuse(message: str) -> NoReturn:
    raise _UsageError(message)


def _check_arguments(argv: list[str]) -> None:
    """Parse the command line as Hydra will, raising :class:`_UsageError` where argparse
    would print its usage over several lines and exit."""
    parser = get_args_parser()  # Hydra's own parser: the flags Hydra accepts, no more
    parser.error = _refuse  # type: ignore[method-assign]
    parser.parse_args(argv)


def job_folder(sources: list[Path], job: str | None) -> Path | None:
    """The folder of the job's YAML file: ``job/<job>.yaml`` in the first config folder that
    has it, in Hydra's search order (``conf/``, then each ``--config-dir``), as Hydra picks."""
    for source in sources if job else []:
        path = source / "job" / f"{job}.yaml"
        if path.is_file():
            return path.parent
    return None


def sweep_settings(runs: list[list[str]]) -> list[str]:
    """Per run of a sweep, the overrides in which it differs from the others, in the order
    they were given: ``job=movie_details cluster=local``."""
    parsed = [dict(o.partition("=")[::2] for o in run) for run in runs]
    keys = dict.fromkeys(key for run in parsed for key in run)
    differ = [key for key in keys if len({run.get(key) for run in parsed}) > 1]
    return [" ".join(f"{k}={run[k]}" for k in differ if k in run) for run in parsed]


@dataclass
class _Ran:
    """What Hydra ran: each run's command-line overrides and outcome (a sweep has several),
    and whether a run started (an exception after that is the runner's, not Hydra's)."""

    runs: list[tuple[list[str], Outcome]] = field(default_factory=list)
    started: bool = False


def _task(cfg: DictConfig, stop: StopSignal) -> Outcome:
    """One run of the configuration Hydra composed: its outcome."""
    for noisy in ("httpx", "httpcore"):  # one line per request drowns the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runtime = HydraConfig.get().runtime
    run_dir = Path(runtime.output_dir)
    sources = [Path(s.path) for s in runtime.config_sources if s.schema == "file"]
    try:
        outcome = run(
            to_run_config(cfg),
            run_dir,
            job_dir=job_folder(sources, runtime.choices.get("job")),
            stop=stop,
        )
    except ConfigError as exc:  # printed once, here: not logged again below
        print(f"error: {exc}", file=sys.stderr)
        return Outcome(EXIT_CONFIG, f"config error: {exc}")
    except StorageError as exc:
        print(f"error: {exc}; results journaled before are kept", file=sys.stderr)
        return Outcome(EXIT_STORAGE, f"storage error: {exc}")
    log.info(outcome.summary)
    return outcome


def _hydra(stop: StopSignal, ran: _Ran) -> None:
    """Let Hydra compose the configuration and call :func:`_task` once per run (a sweep's
    ``-m`` runs several). Hydra's decorator returns nothing of the task's (a launcher may run
    it elsewhere): the task function records each outcome in ``ran``."""

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def runner(cfg: DictConfig) -> None:
        ran.started = True
        overrides = list(HydraConfig.get().overrides.task)
        ran.runs.append((overrides, _task(cfg, stop)))

    runner()


def _shard_suffix(shard: str | None, shards: int | None) -> str:
    """``_shard-I-of-N`` at the end of a shard's run directory (``conf/config.yaml``)."""
    return run_dir_suffix(shard, shards, os.environ)


def main() -> int:
    """Run Hydra and turn what happened into an exit status; SIGTERM is handled as Ctrl-C."""
    stop = StopSignal()  # filled in by the SIGTERM handler
    with sigterm_as_ctrl_c(stop):
        return _main(stop)


def _main(stop: StopSignal) -> int:
    register()
    OmegaConf.register_new_resolver("runner_keys", keys_help, replace=True)  # --help's keys
    OmegaConf.register_new_resolver("runner_shard", _shard_suffix, replace=True)
    if {"--help", "-h"} & set(sys.argv) and not any(a.startswith("job=") for a in sys.argv):
        sys.argv.append("~job")  # --help composes the config: let it do so without a job
    # Hydra reports its errors over several lines (or as a traceback) and exits 1, unless
    # HYDRA_FULL_ERROR is set: then they are raised, and said here in one line.
    try:
        _check_arguments(sys.argv[1:])
    except _UsageError as exc:
        print(f"error: {exc} (python -m runner --help lists the options)", file=sys.stderr)
        return EXIT_CONFIG
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    ran = _Ran()
    try:
        _hydra(stop, ran)
    except SystemExit as exc:  # the end of --help
        if exc.code in (0, None):
            return 0
        return EXIT_INTERNAL if ran.started else EXIT_CONFIG
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside the engine (which handles its own)
        print(
            f"error: {stop.what}; results journaled so far are kept: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return stop.exit_code
    except Exception as exc:
        if ran.started:  # the run raised what it should have handled: a bug
            traceback.print_exc()
            return EXIT_INTERNAL
        print(f"error: {_hydra_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    if len(ran.runs) > 1:
        print("\nSweep summary:")
        settings = sweep_settings([overrides for overrides, _ in ran.runs])
        for setting, (_, outcome) in zip(settings, ran.runs, strict=True):
            print(f"  {setting}: {outcome.summary}" if setting else f"  {outcome.summary}")
    return max((outcome.exit_code for _, outcome in ran.runs), default=0)


if __name__ == "__main__":
    sys.exit(main())
