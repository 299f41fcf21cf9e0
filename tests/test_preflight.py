"""The pre-flight: prompt tokens counted by the nodes, prompts too long for the context
stopped before anything is sent, the estimate of time and cost, and the ETA in tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner._estimate import TokenTally, describe, estimate, eta_seconds, too_long_message
from runner._preflight import answers_of, counted_text, max_tokens_of
from runner._request import Api, Choices, GenerationRequest, Style
from tests.loopback_node import LoopbackNode, loopback_node
from tests.test_cli import cli, error_lines, report

FRAMING_PROBES = 2
"""Chat requests (and tokenizes) measuring a shape's chat framing: the job's first prompt, and
the same with "Hello" for every message (runner/_chat_framing.py)."""


def only_probed(node: LoopbackNode) -> bool:
    """Nothing but the chat framing's probes reached the node's chat: no item was sent."""
    return node.seen["Hello"] == 1 and sum(node.seen.values()) == FRAMING_PROBES


@pytest.fixture
def node() -> Iterator[LoopbackNode]:
    with loopback_node() as found:
        yield found


def _request(**fields: object) -> GenerationRequest:
    base: dict[str, object] = {
        "api": Api.textsynth,
        "style": Style.chat,
        "engine": "e",
        "prompt": "the prompt",
    }
    return GenerationRequest(**(base | fields))  # type: ignore[arg-type]


def test_the_tally_adds_tokens_and_names_the_first_prompts_too_long() -> None:
    tally = TokenTally(context=100)
    for i, tokens in enumerate([10, 95, 50, 99, 20, 61, 70, 80, 90]):
        tally.add(max_tokens=40, answers=2)
        tally.count(f"item-{i}", tokens, room=40)
    assert tally.items == 9 and tally.counted == 9
    assert tally.prompt_tokens == 575 and tally.longest_prompt == 99
    assert tally.output_tokens_max == 9 * 40 * 2
    assert tally.too_long == 6  # those over 60 tokens: 95, 99, 61, 70, 80 and 90
    assert [e.id for e in tally.examples] == ["item-1", "item-3", "item-5", "item-6", "item-7"]


def test_a_prompt_that_fills_the_context_exactly_fits() -> None:
    tally = TokenTally(context=100)
    tally.add(max_tokens=40, answers=1)
    tally.count("a", 60, room=40)
    assert tally.too_long == 0


def test_the_estimate_takes_time_from_the_probed_speed_and_cost_from_the_prices() -> None:
    tally = TokenTally(context=None)
    for _ in range(10):
        tally.add(max_tokens=360, answers=1)
        tally.count("x", 5, room=360)
    found = estimate(
        tally,
        speeds={"a": 1.5, "b": 0.5, "c": None},
        prices={"a": 2.0, "b": 1.0, "c": None},
    )
    assert found.output_tokens_max == 3600 and found.tokens_per_s == 2.0
    assert found.seconds_max == 1800.0  # 3,600 tokens at 2 tokens/s
    assert found.price_per_hour == 3.0 and found.cost_max == 1.5  # half an hour at 3/hour
    assert found.prompt_tokens == 50 and found.not_counted is None
    lines = describe(found)
    assert "50 prompt tokens" in lines[0] and "at most 3,600 output tokens" in lines[0]
    assert "30.0 min" in lines[1] and "cost: at most 1.5000 (3/hour)" in lines[1]


def test_an_estimate_without_counts_or_speed_says_what_it_lacks() -> None:
    tally = TokenTally()
    tally.add(max_tokens=10, answers=1)
    found = estimate(tally, speeds={"a": None}, prices={"a": None}, not_counted="no tokenize")
    assert found.prompt_tokens is None and found.seconds_max is None and found.cost_max is None
    lines = describe(found)
    assert "not counted (no tokenize)" in lines[0]
    assert lines[1].startswith("time: not estimated before the run")
    assert json.loads(json.dumps(found.to_json()))["not_counted"] == "no tokenize"


def test_the_too_long_message_names_the_count_the_context_and_the_way_out() -> None:
    tally = TokenTally(context=64)
    tally.add(max_tokens=32, answers=1)
    tally.count("Heat", 40, room=32)
    tally.add(max_tokens=32, answers=1)
    tally.count("Up", 10, room=32)
    line = too_long_message(estimate(tally, speeds={}, prices={}))
    assert "\n" not in line
    assert line.startswith("1 of 2 prompts do not fit the context of 64 tokens with max_tokens=32")
    assert "'Heat' (40 tokens)" in line and "job.allow_prompt_truncation=true" in line


def test_the_eta_counts_output_tokens() -> None:
    # before three answers: the most an answer may have, at the probed speed
    assert eta_seconds(items_left=10, answered=0, output_tokens=0, elapsed=5.0,
                       tokens_per_answer=200, probed_tokens_per_s=100) == 20.0  # fmt: skip
    # then the observed mean (50 tokens an answer) at the observed 25 tokens/s
    assert eta_seconds(items_left=10, answered=4, output_tokens=200, elapsed=8.0,
                       tokens_per_answer=200, probed_tokens_per_s=100) == 20.0  # fmt: skip
    assert eta_seconds(items_left=0, answered=0, output_tokens=0, elapsed=0.0,
                       tokens_per_answer=None, probed_tokens_per_s=None) == 0.0  # fmt: skip
    assert eta_seconds(items_left=5, answered=0, output_tokens=0, elapsed=1.0,
                       tokens_per_answer=None, probed_tokens_per_s=None) is None  # fmt: skip


def test_the_counted_text_is_what_the_node_reads() -> None:
    assert counted_text(_request(system="be brief")) == "be brief\nthe prompt"
    body = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    assert counted_text(_request(body=body)) == "s\nu"
    assert counted_text(_request(messages=("hi", "hello", "again"))) == "hi\nhello\nagain"
    choices = Choices(labels=("drama", "science fiction"))
    assert counted_text(_request(choices=choices)) == "the prompt science fiction"


def test_a_requests_answers_and_max_tokens_come_from_it_or_the_job() -> None:
    assert answers_of(_request(params={"n": 4})) == 4
    assert answers_of(_request(choices=Choices(labels=("a", "b")))) == 0
    assert max_tokens_of(_request(params={"max_tokens": 7}), 200) == 7
    assert max_tokens_of(_request(body={"max_completion_tokens": 9}), 200) == 9
    assert max_tokens_of(_request(), 200) == 200


def test_a_run_counts_every_prompt_and_keeps_the_estimate_in_its_report(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 2048
    proc = cli(tmp_path, "job=movie_details", "job.max_tokens=100", node=node)
    assert proc.returncode == 0, proc.stderr
    # every prompt, and the chat template's two probes (the first prompt, and "Hello"s);
    # no speed probe
    assert node.tokenized == sum(node.seen.values()) == 20 + FRAMING_PROBES
    found = report(tmp_path)["estimate"]
    # the loopback node reads 5 tokens of any chat and tokenizes a token per word: "Hello"
    # twice (system and user) is 2, so the template adds 3
    (framing,) = found["chat_framing"]
    assert framing["roles"] == ["system", "user"] and framing["tokens"] == 3
    assert framing["measured"] is True and framing["items"] == 20
    assert found["items"] == 20 and found["context"] == 2048 and found["too_long"] == 0
    assert found["output_tokens_max"] == 20 * 100
    assert found["prompt_tokens"] > 20 * 50  # a word a token: each prompt has > 50 words
    assert found["seconds_max"] is None  # a real run measures its own speed
    assert "estimate: items: 20" in proc.stdout  # Hydra logs to stdout


def test_a_rerun_estimates_only_what_it_will_send(tmp_path: Path, node: LoopbackNode) -> None:
    assert cli(tmp_path, "job=movie_details", node=node).returncode == 0
    proc = cli(tmp_path, "job=movie_details", node=node, run="again")
    assert proc.returncode == 0, proc.stderr
    found = report(tmp_path, "again")["estimate"]
    assert found["items"] == 0 and found["output_tokens_max"] == 0
    assert node.tokenized == 20  # the first run's count; the second had nothing to count


def test_prompts_too_long_for_the_context_stop_the_run_before_anything_is_sent(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 150  # a movie_details prompt is about 70 words: 70 + 100 > 150
    proc = cli(tmp_path, "job=movie_details", "job.max_tokens=100", node=node)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "20 of 20 prompts do not fit the context of 150 tokens with max_tokens=100" in lines[0]
    assert only_probed(node)
    assert not list(tmp_path.glob("journal/*.jsonl"))
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_resume_false_keeps_earlier_results_when_prompts_are_too_long(
    tmp_path: Path, node: LoopbackNode
) -> None:
    assert cli(tmp_path, "job=movie_details", "job.max_tokens=50", node=node).returncode == 0
    journal = (tmp_path / "journal" / "movie_details.jsonl").read_text()
    node.context = 100
    proc = cli(tmp_path, "job=movie_details", "job.max_tokens=50", "resume=false", node=node,
               run="again")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (tmp_path / "journal" / "movie_details.jsonl").read_text() == journal


def test_a_job_may_allow_prompts_the_node_will_cut(tmp_path: Path, node: LoopbackNode) -> None:
    node.context = 150
    proc = cli(tmp_path, "job=movie_details", "job.max_tokens=100",
               "job.allow_prompt_truncation=true", node=node)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "job.allow_prompt_truncation: 20 of 20 prompts do not fit" in proc.stdout
    assert report(tmp_path)["estimate"]["too_long"] == 20


def test_a_dry_run_flags_prompts_too_long_and_exits_2(tmp_path: Path, node: LoopbackNode) -> None:
    node.context = 150
    proc = cli(tmp_path, "job=movie_details", "job.max_tokens=100", "dry_run=true", node=node)
    assert proc.returncode == 2, proc.stderr
    assert "Forrest Gump" in proc.stderr  # the plan is printed first
    assert "20 of 20 prompts do not fit" in error_lines(proc)[-1]


def test_a_dry_run_probes_the_speed_and_prices_the_run(tmp_path: Path, node: LoopbackNode) -> None:
    nodes = f"cluster.nodes=[{{address: '{node.address}', slots: 2, price_per_hour: 3.6}}]"
    proc = cli(tmp_path, "job=movie_details", "dry_run=true", "cluster=static", nodes)
    assert proc.returncode == 0, proc.stderr
    assert node.tokenized == 20
    assert sum(node.seen.values()) == 2  # a short answer per slot, all at once
    assert "time: at most" in proc.stderr and "(3.6/hour)" in proc.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_a_node_without_tokenize_leaves_the_tokens_uncounted(tmp_path: Path) -> None:
    with loopback_node() as node:
        proc = cli(
            tmp_path,
            "job=movie_details",
            "dry_run=true",
            "preflight.probe_speed=never",
            "model.api=openai",  # the loopback node has no /tokenize: a 404
            "model.style=completion",
            node=node,
        )
    assert proc.returncode == 0, proc.stderr
    assert "prompt tokens not counted (node " in proc.stderr and "could not tokenize" in proc.stderr
