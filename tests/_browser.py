"""A real headless browser for the tests: Chromium from Debian's packages.

:func:`load` opens a local page in ``chromium-headless-shell`` (or ``chromium``), takes a
screenshot and returns the console messages the page produced, read from Chromium's log on
stderr (``--enable-logging=stderr``): an error in a script, a resource that failed to load,
anything a script logs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium-headless-shell", "chromium")
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


def browser() -> str:
    """The browser's executable; the test is skipped (naming the package) without one."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium: apt install chromium-headless-shell (make install-test)")


def load(page: Path, screenshot: Path, *, size: str = "1200,1600") -> list[str]:
    """Load ``page`` (no network: a file URL), write a PNG screenshot, return the console
    messages."""
    proc = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",  # root in a container
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={size}",
            f"--screenshot={screenshot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return CONSOLE.findall(proc.stderr)


def distinct_colours(png: Path) -> int:
    """How many different colours a screenshot holds (a blank page has one)."""
    from matplotlib import image

    pixels = image.imread(png)
    flat = pixels.reshape(-1, pixels.shape[-1])
    return len({tuple(p) for p in flat[:: max(1, len(flat) // 200_000)]})
