"""``python -m runner job=<job> cluster=<cluster> ...``: the Hydra entry point.

Hydra composes the configuration (and runs sweeps with ``-m``); this module converts it to
typed objects and hands them to :func:`runner._run.run`. Nothing else imports Hydra.

Exit status: 0 every item succeeded; 1 some items failed; 2 configuration or usage error,
nothing sent; 3 the run stopped because no node could serve (results so far are kept);
4 an internal error; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import TextIO

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from ._checks import to_run_config
from ._config import register
from ._errors import ConfigError
from ._outcome import EXIT_CONFIG, EXIT_INTERNAL, EXIT_INTERRUPTED, Outcome
from ._run import run

log = logging.getLogger("runner")

_outcomes: list[Outcome] = []
_started = False


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
    """Hydra's multi-line composition error as one line."""
    lines = [
        line.strip()
        for line in hydra_message.splitlines()
        if line.strip() and "HYDRA_FULL_ERROR" not in line and not line.startswith("Traceback")
    ]
    return " ".join(lines) or "the configuration could not be composed"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    global _started
    _started = True
    if isinstance(sys.stderr, _HeldStderr):
        sys.stderr.release()
    for noisy in ("httpx", "httpcore"):  # one line per request drowns the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        outcome = run(to_run_config(cfg), run_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        outcome = Outcome(EXIT_CONFIG, f"config error: {exc}")
    _outcomes.append(outcome)
    log.info(outcome.summary)


def main() -> int:
    """Run Hydra and turn what happened into an exit status."""
    register()
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
    except KeyboardInterrupt:  # Ctrl-C outside the engine (which handles its own)
        held.held.clear()
        print(
            "error: interrupted (Ctrl-C); results journaled so far are kept: "
            "run the same command again to resume",
            file=held.real,
        )
        return EXIT_INTERRUPTED
    finally:
        sys.stderr = held.real
        if held.holding:  # --help, --cfg and the like: nothing was run
            held.release()
    if len(_outcomes) > 1:
        print("\nSweep summary:")
        for outcome in _outcomes:
            print(f"  {outcome.summary}")
    return max((o.exit_code for o in _outcomes), default=0)


if __name__ == "__main__":
    sys.exit(main())
