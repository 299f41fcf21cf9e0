"""Whole-file reads that fail on one line, and atomic replacement."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from runner._errors import ConfigError
from runner._files import read_text_file, replace_file


def test_read_text_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("café\n", encoding="utf-8")
    assert read_text_file(path, what="template file") == "café\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, r"t.txt: template file not found$"),
        (lambda p: p.mkdir(), r"t.txt: template file is a directory$"),
        (lambda p: p.write_bytes(b"caf\xe9!"), r"t.txt: template file is not UTF-8 \(invalid"),
    ],
    ids=["missing", "directory", "latin-1"],
)
def test_read_text_file_fails_on_one_line_naming_the_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "t.txt"
    make(path)
    with pytest.raises(ConfigError, match=message) as caught:
        read_text_file(path, what="template file")
    assert "\n" not in str(caught.value)


def test_replace_file_creates_the_folder_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "report.json"
    with replace_file(path) as out:
        out.write("{}\n")
    assert path.read_text(encoding="utf-8") == "{}\n"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_replace_file_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old", encoding="utf-8")

    def write_half() -> None:
        with replace_file(path) as out:
            out.write("new, half")
            raise ValueError("half-way")

    with pytest.raises(ValueError, match="half-way"):
        write_half()
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_replace_file_in_binary_keeps_the_mode_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o640)
    with replace_file(path, binary=True, keep_mode=True) as out:
        out.write(b"new\n")
    assert path.read_bytes() == b"new\n"
    assert path.stat().st_mode & 0o777 == 0o640
