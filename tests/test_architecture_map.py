"""docs/architecture.md's picture places every module of runner/ in exactly one stage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_runner_module_is_in_exactly_one_stage_of_the_picture() -> None:
    spec = importlib.util.spec_from_file_location("draw", ROOT / "docs" / "draw_architecture.py")
    assert spec is not None and spec.loader is not None
    draw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draw)
    stage_of = draw.check()  # raises SystemExit naming what is out of date
    assert set(stage_of) == draw.modules()
    assert draw.imports("_run") >= {"_engine", "_journal", "_plan"}
