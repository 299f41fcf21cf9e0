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

import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import TextIO

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ._checks import to_run_config
from ._config import register
from ._errors import ConfigError, StorageError
from ._help import keys_help
from ._outcome import EXIT_CONFIG, EXIT_INTERNAL, EXIT_STORAGE, Outcome
from ._run import run
from ._shard import run_dir_suffix
from ._signals import StopSignal, sigterm_as_ctrl_c

log = logging.getLogger("runner")

_outcomes: list[Outcome] = []
_settings: list[list[str]] = []  # each run's command-line overrides, beside its outcome
_started = False
_stop = StopSignal()  # filled in by the SIGTERM handler that main() installs
# the last line of a traceback of an OSError: "NotADirectoryError: [Errno 20] Not a ...: 'p'"
_OS_ERROR = re.compile(r"\w+: \[Errno \d+\] (?P<reason>.+?)(?:: '(?P<path>.+)')?")


class _HeldStderr(io.TextIOBase):
    """Holds what is written to stderr until the run starts.

    Hydra reports a composition error over several lines (and a hint about
    HYDRA_FULL_ERROR); holding them lets :func:`main` print one line instead. Once the run
    starts, writes go straight through.
    """

    def __init__(self, real: TextIO) -> None:
        self.real = real
        self.held: list[str] = []
        self.holding = True

    def write(self, text: str) -> int:
        if self.holding:
            self.held.append(text)
            return len(text)
        return self.real.write(text)

    def release(self) -> None:
        self.holding = False
        self.real.write("".join(self.held))
        self.held.clear()

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()


def _one_line(hydra_message: str) -> str:
    """Hydra's multi-line composition error as one line. When Hydra reports an exception of
    its own (a traceback: it could not create the run directory, say), only its last line
    counts, and an ``OSError`` there becomes ``path: reason``."""
    lines = [
        line.strip()
        for line in hydra_message.splitlines()
        if line.strip() and "HYDRA_FULL_ERROR" not in line
    ]
    if any(line.startswith("Traceback") for line in lines):
        found = _OS_ERROR.fullmatch(lines[-1])
        if found is None:
            return lines[-1]
        where = f"{found['path']}: " if found["path"] else ""
        return f"{where}{found['reason']} (while setting up the run directory)"
    return " ".join(lines) or "the configuration could not be composed"


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


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    global _started
    _started = True
    if isinstance(sys.stderr, _HeldStderr):
        sys.stderr.release()
    for noisy in ("httpx", "httpcore"):  # one line per request drowns the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _settings.append(list(HydraConfig.get().overrides.task))
    runtime = HydraConfig.get().runtime
    run_dir = Path(runtime.output_dir)
    sources = [Path(s.path) for s in runtime.config_sources if s.schema == "file"]
    try:
        outcome = run(
            to_run_config(cfg),
            run_dir,
            job_dir=job_folder(sources, runtime.choices.get("job")),
            stop=_stop,
        )
    except ConfigError as exc:  # printed once, here: not logged again below
        print(f"error: {exc}", file=sys.stderr)
        _outcomes.append(Outcome(EXIT_CONFIG, f"config error: {exc}"))
        return
    except StorageError as exc:
        print(f"error: {exc}; results journaled before are kept", file=sys.stderr)
        _outcomes.append(Outcome(EXIT_STORAGE, f"storage error: {exc}"))
        return
    _outcomes.append(outcome)
    log.info(outcome.summary)


def _shard_suffix(shard: str | None, shards: int | None) -> str:
    """``_shard-I-of-N`` at the end of a shard's run directory (``conf/config.yaml``)."""
    return run_dir_suffix(shard, shards, os.environ)


def main() -> int:
    """Run Hydra and turn what happened into an exit status; SIGTERM is handled as Ctrl-C."""
    with sigterm_as_ctrl_c(_stop):
        return _main()


def _main() -> int:
    register()
    OmegaConf.register_new_resolver("runner_keys", keys_help, replace=True)  # --help's keys
    OmegaConf.register_new_resolver("runner_shard", _shard_suffix, replace=True)
    if {"--help", "-h"} & set(sys.argv) and not any(a.startswith("job=") for a in sys.argv):
        sys.argv.append("~job")  # --help composes the config: let it do so without a job
    held = _HeldStderr(sys.stderr)
    sys.stderr = held
    try:
        _hydra_main()
    except SystemExit as exc:
        if exc.code in (0, None):
            pass
        elif _started:  # Hydra caught an unexpected exception from the run: a bug
            return EXIT_INTERNAL
        else:  # Hydra could not compose the configuration
            print(f"error: {_one_line(''.join(held.held))}", file=held.real)
            held.held.clear()
            return EXIT_CONFIG
    except HydraException as exc:  # --help composes outside Hydra's own error report
        held.held.clear()
        print(f"error: {_one_line(str(exc))}", file=held.real)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside the engine (which handles its own)
        held.held.clear()
        print(
            f"error: {_stop.what}; results journaled so far are kept: "
            "run the same command again to resume",
            file=held.real,
        )
        return _stop.exit_code
    finally:
        sys.stderr = held.real
        if held.holding:  # --help, --cfg and the like: nothing was run
            held.release()
    if len(_outcomes) > 1:
        print("\nSweep summary:")
        for setting, outcome in zip(sweep_settings(_settings), _outcomes, strict=True):
            print(f"  {setting}: {outcome.summary}" if setting else f"  {outcome.summary}")
    return max((o.exit_code for o in _outcomes), default=0)


if __name__ == "__main__":
    sys.exit(main())
