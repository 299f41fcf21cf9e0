from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._errors import ConfigError
from runner._inputs import Item, content_id, read_items, resolve_format, scan_items

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def items(path: Path, **options: Any) -> list[Item]:
    return list(read_items(path, **options))


# --------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("movies.txt", "lines"),
        ("movies.LST", "lines"),
        ("movies", "lines"),
        ("movies.csv", "csv"),
        ("movies.jsonl", "jsonl"),
        ("movies.ndjson", "jsonl"),
    ],
)
def test_auto_format_follows_the_extension(name: str, expected: str) -> None:
    assert resolve_format(Path(name)) == expected


def test_explicit_format_wins_over_the_extension() -> None:
    assert resolve_format(Path("movies.txt"), "jsonl") == "jsonl"


@pytest.mark.parametrize(
    ("path", "format", "message"),
    [
        ("movies.xlsx", "auto", "cannot tell the input format from the extension '.xlsx'"),
        ("movies.txt", "yaml", "unknown input format 'yaml'"),
    ],
)
def test_unknown_format_is_a_config_error(path: str, format: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_format(Path(path), format)


def test_lines_are_items_and_comments_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", "# films\nForrest Gump\n\n   \nThe Matrix \r\n#Heat\nAlien")
    got = items(path, text_field="title")
    assert [(i.index, i.line, i.data) for i in got] == [
        (0, 2, {"title": "Forrest Gump"}),
        (1, 5, {"title": "The Matrix "}),  # only the newline is removed
        (2, 7, {"title": "Alien"}),
    ]


def test_csv_rows_become_items_with_their_first_line(tmp_path: Path) -> None:
    text = 'title,year\nHeat,1995\n\n"Multi\nline",2000\nAlien,1979\n'
    got = items(write(tmp_path, "m.csv", text))
    assert [(i.index, i.line, i.data) for i in got] == [
        (0, 2, {"title": "Heat", "year": "1995"}),
        (1, 4, {"title": "Multi\nline", "year": "2000"}),
        (2, 6, {"title": "Alien", "year": "1979"}),
    ]


def test_jsonl_objects_become_items_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    text = '{"title": "Heat", "year": 1995}\n\n{"title": "Alien", "tags": ["sf"]}\n'
    got = items(write(tmp_path, "m.jsonl", text))
    assert [(i.index, i.line, i.data) for i in got] == [
        (0, 1, {"title": "Heat", "year": 1995}),
        (1, 3, {"title": "Alien", "tags": ["sf"]}),
    ]


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    got = items(write(tmp_path, "m.csv", "\ufefftitle\nHeat\n"))
    assert got[0].data == {"title": "Heat"}


def test_the_shipped_movie_list_reads_as_titles() -> None:
    got = items(PROMPTS / "movies.txt", text_field="title")
    assert got[0].data == {"title": "Forrest Gump"}
    assert len(got) == 20


# --------------------------------------------------------------------- ids


def test_id_field_gives_the_id_as_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "m.jsonl", '{"id": 7, "t": "a"}\n{"id": "x9", "t": "b"}\n')
    assert [i.id for i in items(path, id_field="id")] == ["7", "x9"]


def test_derived_id_depends_on_content_not_position(tmp_path: Path) -> None:
    first = items(write(tmp_path, "a.txt", "Heat\nAlien\n"))
    second = items(write(tmp_path, "b.txt", "# moved\nAlien\nHeat\n"))
    assert {i.data["text"]: i.id for i in first} == {i.data["text"]: i.id for i in second}
    assert first[0].id != first[1].id
    assert all(len(i.id) == 12 and int(i.id, 16) >= 0 for i in first)


def test_derived_id_ignores_key_order() -> None:
    assert content_id({"a": 1, "b": "é"}) == content_id({"b": "é", "a": 1})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.jsonl", '{"t": "a"}\n', r"m.jsonl:1: no id field 'id' in this item"),
        ("m.jsonl", '{"id": null}\n', r"m.jsonl:1: id field 'id' must be a string or a number"),
        ("m.jsonl", '{"id": [1]}\n', r"m.jsonl:1: id field 'id' must be a string or a number"),
        ("m.jsonl", '{"id": " "}\n', r"m.jsonl:1: id field 'id' is empty"),
        ("m.csv", "t,id\na,1\nb,\n", r"m.csv:3: id field 'id' is empty"),
    ],
)
def test_bad_id_field_names_file_line_and_field(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        items(write(tmp_path, name, content), id_field="id")


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.jsonl", '{"a": 1}\n{"a": \n', r"m.jsonl:2: not valid JSON: "),
        ("m.jsonl", '{"a": 1}\n\n[1, 2]\n', r"m.jsonl:3: expected a JSON object, got list"),
        ("m.jsonl", "[" * 100_000 + "\n", r"m.jsonl:1: not valid JSON: nested too deeply"),
        ("m.csv", "a,b\n1,2\n1,2,3\n", r"m.csv:3: expected 2 fields \(as the header\), got 3"),
        ("m.csv", "a,b\n1\n", r"m.csv:2: expected 2 fields \(as the header\), got 1"),
        ("m.csv", "a,a\n1,2\n", r"m.csv:1: duplicate column 'a' in the header"),
        ("m.csv", 'a\n"x"y\n', r"m.csv:2: bad CSV: ',' expected after '\"'"),
        ("m.csv", 'a\nok\n"never closed\nb\n', r"m.csv:3: bad CSV: unexpected end of data"),
        ("m.txt", b"ok\n\xff\xfe bad\n", r"m.txt:2: not UTF-8 \(byte 0xff at column 1\)"),
    ],
)
def test_malformed_input_names_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        items(write(tmp_path, name, content))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.txt", ""),
        ("m.txt", "# only a comment\n\n"),
        ("m.csv", "title,year\n"),
        ("m.csv", "\n\n"),
        ("m.jsonl", "\n \n"),
    ],
)
def test_input_without_items_is_a_config_error(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(ConfigError, match=r"no items in the input file$"):
        items(write(tmp_path, name, content))


def test_missing_file_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(ConfigError) as caught:
        read_items(path)  # not iterated: the check is eager
    assert str(caught.value) == f"{path}: input file not found"


def test_a_directory_is_not_readable_input(tmp_path: Path) -> None:
    path = tmp_path / "dir.txt"
    path.mkdir()
    with pytest.raises(ConfigError, match=r"dir.txt: cannot read input file: it is a directory"):
        read_items(path)


def test_permission_denied_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root can read anything, so the failing open is simulated."""
    path = write(tmp_path, "m.txt", "a\n")

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError, match=r"m.txt: cannot read input file: permission denied"):
        items(path)


def test_items_stream_without_reading_the_whole_file(tmp_path: Path) -> None:
    """A bad line far down is not reached while the first items are taken."""
    path = write(tmp_path, "m.jsonl", '{"a": 1}\n{"a": 2}\nnot json\n')
    assert [i.data["a"] for i in itertools.islice(read_items(path), 2)] == [1, 2]


# --------------------------------------------------------------------- scan


def test_scan_counts_the_items(tmp_path: Path) -> None:
    path = write(tmp_path, "m.jsonl", "\n".join(json.dumps({"n": n}) for n in range(50)))
    assert scan_items(path) == 50


def test_scan_rejects_duplicate_ids_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", "Heat\nAlien\n# again\nHeat\n")
    with pytest.raises(ConfigError) as caught:
        scan_items(path)
    heat = content_id({"text": "Heat"})
    assert str(caught.value) == f"{path}:4: duplicate id '{heat}' (first seen on line 1)"


def test_scan_rejects_duplicate_id_field_values(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,t\n1,a\n2,b\n1,c\n")
    with pytest.raises(ConfigError, match=r"m.csv:4: duplicate id '1' \(first seen on line 2\)"):
        scan_items(path, id_field="id")


@given(ids=st.lists(st.integers(0, 40), min_size=1, max_size=60))
@settings(max_examples=80, deadline=None)
def test_scan_finds_exactly_the_first_repeated_id(
    tmp_path_factory: pytest.TempPathFactory, ids: list[int]
) -> None:
    tmp = tmp_path_factory.mktemp("scan")
    path = write(tmp, "m.csv", "id\n" + "".join(f"{i}\n" for i in ids))
    first: dict[int, int] = {}
    repeat = None
    for line, i in enumerate(ids, start=2):
        if i in first:
            repeat = (line, i, first[i])
            break
        first[i] = line
    if repeat is None:
        assert scan_items(path, id_field="id") == len(ids)
    else:
        line, i, seen = repeat
        with pytest.raises(ConfigError) as caught:
            scan_items(path, id_field="id")
        assert str(caught.value) == f"{path}:{line}: duplicate id '{i}' (first seen on line {seen})"


# --------------------------------------------------------------------- hard edges (issue 11)

MIB = 1 << 20  # the documented limit of one input line (runner._inputs.MAX_LINE_BYTES)


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("m.txt", b"x" * (MIB + 1) + b"\n"),
        ("m.jsonl", b'{"a": "' + b"x" * MIB + b'"}\n'),
        ("m.txt", b"x" * (3 * MIB)),  # no newline at all
    ],
)
def test_a_line_past_the_limit_is_refused_naming_file_line_and_limit(
    tmp_path: Path, name: str, line: bytes
) -> None:
    first = b'{"a": 1}\n' if name.endswith(".jsonl") else b"ok\n"
    path = write(tmp_path, name, first + line)
    with pytest.raises(ConfigError, match=rf"{name}:2: line longer than 1 MiB") as caught:
        items(path)
    assert "\n" not in str(caught.value)


def test_a_line_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", b"x" * MIB + b"\nok\n")
    assert [len(i.data["text"]) for i in items(path)] == [MIB, 2]


def test_a_nul_byte_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", b"ok\nbad\x00line\n")
    with pytest.raises(ConfigError, match=r"m.txt:2: NUL byte at column 4"):
        items(path)


def test_dev_zero_is_refused_at_once_in_bounded_memory() -> None:
    """An endless input: a child process with 1 GiB of address space must fail in seconds."""
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    code = (
        "from pathlib import Path\n"
        "from runner._inputs import scan_items\n"
        "from runner._errors import ConfigError\n"
        "try:\n"
        "    scan_items(Path('/dev/zero'), format='lines')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROMPTS.parent,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit_memory,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    said = proc.stdout.strip()
    assert said == "/dev/zero:1: line longer than 1 MiB (the limit of one input line)"
