"""The first repeated value of a stream, found exactly through an on-disk table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner._repeats import Repeat, first_repeat


def first_repeat_in_memory(values: list[str]) -> Repeat | None:
    seen: dict[str, int] = {}
    for line, value in enumerate(values, start=1):
        if value in seen:
            return Repeat(value, line, seen[value])
        seen[value] = line
    return None


@given(values=st.lists(st.text(max_size=3), max_size=80))
def test_the_first_repeat_is_the_one_a_dict_would_find(values: list[str]) -> None:
    pairs = [(value, line) for line, value in enumerate(values, start=1)]
    assert first_repeat(pairs) == first_repeat_in_memory(values)


def test_values_that_differ_only_in_case_or_a_hash_collision_are_not_repeats() -> None:
    # hash(-1) == hash(-2) in CPython: a filter on hashes would need a second look
    assert first_repeat([("Heat", 1), ("heat", 2), (str(-1), 3), (str(-2), 4)]) is None


def test_the_first_repeat_is_by_its_second_appearance_not_its_first() -> None:
    values = ["a", "b", "b", "a"]
    assert first_repeat([(v, i) for i, v in enumerate(values, 1)]) == Repeat("b", 3, 2)


def test_an_error_of_the_stream_propagates() -> None:
    def stream() -> Iterator[tuple[str, int]]:
        yield "a", 1
        yield "a", 2
        raise ValueError("bad line 3")

    with pytest.raises(ValueError, match="bad line 3"):
        first_repeat(stream())
