"""A wheelhouse is usable only as built: its SHA256SUMS names the set of wheels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.wheelhouse import MANIFEST, SUMS, WheelhouseError, read_wheelhouse, sums_text


def built(tmp_path: Path) -> Path:
    for name in ("a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / MANIFEST).write_text(json.dumps({"python": "3.11"}))
    (tmp_path / SUMS).write_text(sums_text(tmp_path))
    return tmp_path


def test_a_built_wheelhouse_reads(tmp_path: Path) -> None:
    wheelhouse = read_wheelhouse(built(tmp_path))
    assert wheelhouse.python == "3.11"
    assert wheelhouse.wheels == ("a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl")
    assert len(wheelhouse.digest) == 64


def test_a_changed_wheel_changes_nothing_silently(tmp_path: Path) -> None:
    path = built(tmp_path)
    (path / "b-2.0-py3-none-any.whl").write_bytes(b"tampered")
    with pytest.raises(WheelhouseError, match="differ from SHA256SUMS"):
        read_wheelhouse(path)


def test_no_wheelhouse_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(WheelhouseError, match=r"python -m deploy\.wheelhouse"):
        read_wheelhouse(tmp_path)
