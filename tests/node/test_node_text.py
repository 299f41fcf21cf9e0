"""Generated text: UTF-8 across tokens, stop strings, and what a stream may show."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.node._text import TextAssembler


def feed(pieces: list[bytes], stop: tuple[str, ...] = ()) -> tuple[list[str], TextAssembler]:
    text = TextAssembler(stop)
    sent = [text.push(piece) for piece in pieces]
    sent.append(text.finish())
    return sent, text


def test_without_stop_strings_text_passes_straight_through() -> None:
    sent, text = feed([b"Hello", b" world"])
    assert sent == ["Hello", " world", ""]
    assert (text.text, text.stopped) == ("Hello world", False)


def test_a_stop_string_split_over_tokens_is_never_shown() -> None:
    sent, text = feed([b"one, two", b" EN", b"D and more"], stop=("END",))
    assert sent == ["one, two", " ", "", ""]
    assert (text.text, text.stopped) == ("one, two ", True)


def test_text_that_only_looked_like_a_stop_string_is_released() -> None:
    sent, text = feed([b"a E", b"N", b"x"], stop=("END",))
    assert sent == ["a ", "", "ENx", ""]
    assert (text.text, text.stopped) == ("a ENx", False)


def test_held_back_text_is_flushed_at_the_end() -> None:
    sent, text = feed([b"a EN"], stop=("END",))
    assert sent == ["a ", "EN"]
    assert text.text == "a EN"


def test_earliest_of_several_stop_strings_wins() -> None:
    _, text = feed([b"x: 1\n2. y"], stop=("2.", "\n"))
    assert text.text == "x: 1"


def test_a_stop_string_at_the_very_start_gives_empty_text() -> None:
    sent, text = feed([b"\n\nrest"], stop=("\n",))
    assert (sent, text.text, text.stopped) == (["", ""], "", True)


def test_nothing_is_accepted_after_a_stop() -> None:
    text = TextAssembler(("!",))
    assert text.push(b"hi!") == "hi"
    assert text.push(b"more") == ""
    assert (text.finish(), text.text) == ("", "hi")


def test_a_character_split_over_tokens_arrives_whole() -> None:
    euro = "€".encode()
    sent, text = feed([b"1 ", euro[:1], euro[1:], b" 2"])
    assert sent == ["1 ", "", "€", " 2", ""]
    assert text.text == "1 € 2"


def test_a_truncated_character_at_the_end_becomes_a_replacement_character() -> None:
    sent, text = feed([b"ok ", "€".encode()[:2]])
    assert text.text == "ok \ufffd"
    assert "".join(sent) == text.text


@pytest.mark.parametrize("stop", [(), ("END",), ("a", "bb"), ("\n\n",)])
@given(text=st.text(max_size=40), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_pieces_add_up_to_the_text_and_never_contain_a_stop(
    stop: tuple[str, ...], text: str, cuts: list[int]
) -> None:
    data = text.encode()
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    sent, assembler = feed(pieces, stop)
    assert "".join(sent) == assembler.text
    assert not any(s in assembler.text for s in stop)
    if not assembler.stopped:
        assert assembler.text == text
    else:
        cut = min(i for i in (text.find(s) for s in stop) if i >= 0)
        assert assembler.text == text[:cut]
