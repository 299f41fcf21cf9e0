"""The pre-flight's count of a large job: only the prompts at risk of not fitting the context
are counted one by one, and a sample of the others stands for the rest (scaled by bytes)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from trio.testing import MockClock

from runner._cluster import remote_nodes
from runner._errors import ConfigError
from runner._estimate import Prompt, Sample, TokenTally, describe, estimate, token_bound
from runner._plan import prepare
from runner._preflight import count_tokens
from runner._work import Work
from tests.loopback_node import LoopbackNode, loopback_node
from tests.test_cli import cli, error_lines, report
from tests.test_config import load
from tests.test_preflight import FRAMING_PROBES, only_probed


@pytest.fixture
def node() -> Iterator[LoopbackNode]:
    with loopback_node() as found:
        yield found


def _prompt(i: int, size: int = 10) -> Prompt:
    return Prompt(id=f"id{i}", key=f"key-{i}", text="x" * size, bytes=size, room=10)


def _titles(tmp_path: Path, titles: list[str]) -> str:
    path = tmp_path / "titles.txt"
    path.write_text("\n".join(titles) + "\n", encoding="utf-8")
    return f"job.input.path={path}"


def test_the_sample_is_the_same_for_the_same_work_in_any_order() -> None:
    prompts = [_prompt(i) for i in range(1000)]
    shuffled = random.Random(7).sample(prompts, len(prompts))
    first, second = Sample(size=20), Sample(size=20)
    for prompt in prompts:
        first.offer(prompt)
    for prompt in shuffled:
        second.offer(prompt)
    assert len(first.kept()) == 20 and not first.whole
    assert {p.id for p in first.kept()} == {p.id for p in second.kept()}
    assert first.offered == 1000 and first.bytes == 10_000


def test_the_sample_is_spread_over_the_whole_input() -> None:
    sample = Sample(size=200)
    for i in range(10_000):
        sample.offer(_prompt(i))
    positions = sorted(int(p.id.removeprefix("id")) for p in sample.kept())
    quarters = [sum(1 for i in positions if q * 2500 <= i < (q + 1) * 2500) for q in range(4)]
    assert all(30 <= n <= 70 for n in quarters), quarters  # about 50 in each quarter


def test_a_sample_offered_fewer_prompts_than_its_size_keeps_them_all_in_order() -> None:
    sample = Sample(size=5)
    for i in range(3):
        sample.offer(_prompt(i, size=10 + i))
    assert sample.whole and [p.id for p in sample.kept()] == ["id0", "id1", "id2"]
    assert sample.longest_left_out() is None  # the longest is kept


def test_the_longest_prompt_left_out_of_the_sample_is_named_apart() -> None:
    sample = Sample(size=1)
    for i in range(50):
        sample.offer(_prompt(i, size=500 if i == 17 else 10))
    assert sample.longest is not None and sample.longest.id == "id17"
    (kept,) = sample.kept()
    longest = sample.longest_left_out()
    assert (longest.id if longest else None) == (None if kept.id == "id17" else "id17")


def test_the_bound_is_the_bytes_and_the_slack() -> None:
    assert token_bound(0) == 4 and token_bound(1000) == 1004


def test_the_tally_scales_the_samples_tokens_per_byte_to_the_prompts_left_out() -> None:
    tally = TokenTally(context=4096)
    for _ in range(1000):
        tally.add(max_tokens=50, answers=1)
    tally.count("long", 900, room=50, at_risk=True)  # counted: its bound did not fit
    for i in range(10):  # the sample: 100 bytes and 25 tokens each
        tally.count(f"s{i}", 25, room=50, sample_bytes=100)
    tally.leave_out(989, 989 * 120)  # the rest: 120 bytes each, so 30 tokens each
    found = estimate(tally, speeds={}, prices={})
    assert found.prompt_tokens == 900 + 250 + 989 * 30
    assert found.prompt_tokens_counted == 1150 and found.counted == 11
    assert found.sampled == 10 and found.at_risk == 1 and found.longest_prompt == 900
    assert found.to_json()["sampled"] == 10
    line = describe(found)[0]
    assert "about 30,820 prompt tokens (estimated by bytes from a sample of 10;" in line
    assert "11 prompts counted, 1 of them long enough to be at risk" in line


def test_a_tally_whose_count_stopped_leaves_the_tokens_uncounted() -> None:
    tally = TokenTally(context=None)
    for _ in range(5):
        tally.add(max_tokens=50, answers=1)
    tally.count("a", 10, room=50, sample_bytes=40)  # the rest never left out: counting stopped
    found = estimate(tally, speeds={}, prices={}, not_counted="node n1 could not tokenize")
    assert found.prompt_tokens is None and found.sampled == 0
    assert found.not_counted == "node n1 could not tokenize"


def test_a_sample_of_prompts_without_bytes_scales_by_items() -> None:
    tally = TokenTally()
    for _ in range(4):
        tally.add(max_tokens=1, answers=1)
    tally.count("a", 1, room=1, sample_bytes=0)
    tally.leave_out(3, 0)
    assert estimate(tally, speeds={}, prices={}).prompt_tokens == 4


def test_a_job_of_many_short_prompts_counts_only_a_sample(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 2048
    films = [f"Film {i:04d}" for i in range(1000)]  # the same words, the same bytes
    proc = cli(tmp_path, "job=movie_details", _titles(tmp_path, films), "preflight.sample=40",
               "dry_run=true", "preflight.probe_speed=never", node=node)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the sample, and the longest prompt in bytes unless the sample holds it
    assert node.tokenized - FRAMING_PROBES in (40, 41) and only_probed(node)
    said = re.search(
        r"about ([\d,]+) prompt tokens \(estimated by bytes from a sample of 40; (\d+) prompts "
        r"counted, 0 of them long enough to be at risk; longest counted (\d+)\)",
        proc.stderr,
    )
    assert said is not None, proc.stderr
    total, counted, longest = (int(g.replace(",", "")) for g in said.groups())
    assert counted == node.tokenized - FRAMING_PROBES
    # every prompt has the same bytes and tokens (a word a token): the estimate is exact
    assert total == 1000 * longest


def test_the_report_says_the_prompt_tokens_were_estimated_from_a_sample(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 2048
    films = [f"Film {i:04d}" for i in range(30)]
    proc = cli(tmp_path, "job=movie_details", _titles(tmp_path, films), "preflight.sample=5",
               node=node)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert node.tokenized - FRAMING_PROBES in (5, 6)
    assert sum(node.seen.values()) == 30 + FRAMING_PROBES
    found = report(tmp_path)["estimate"]
    assert found["items"] == 30 and found["sampled"] == 5 and found["at_risk"] == 0
    assert found["counted"] == node.tokenized - FRAMING_PROBES and found["too_long"] == 0
    assert found["prompt_tokens"] == 30 * found["longest_prompt"]
    assert found["prompt_tokens_counted"] == found["counted"] * found["longest_prompt"]
    assert "estimated by bytes from a sample of 5" in proc.stdout  # Hydra logs to stdout


def test_a_prompt_at_risk_is_counted_exactly_and_refused_when_too_long(
    tmp_path: Path, node: LoopbackNode
) -> None:
    # a short movie_details prompt is about 530 bytes: with max_tokens=200 its bound fits 1,000
    node.context = 1000
    films = [f"Film {i:04d}" for i in range(300)]
    fits = "Fits " + " ".join(["word"] * 150)  # 830 bytes more: at risk, 225 + 200 tokens fit
    too_long = "Long " + " ".join(["word"] * 900)  # 900 words more: 975 + 200 tokens do not
    inputs = _titles(tmp_path, [*films[:100], fits, *films[100:200], too_long, *films[200:]])
    proc = cli(tmp_path, "job=movie_details", inputs, "preflight.sample=20", node=node)
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert "1 of 302 prompts do not fit the context of 1000 tokens with max_tokens=200" in line
    (named,) = re.findall(r"'\w+' \((\d+) tokens\)", line)  # the long one; no false fail
    assert int(named) > 900
    assert only_probed(node)  # nothing was sent
    # the two at risk, the sample of the short ones, and their longest unless sampled
    assert node.tokenized - FRAMING_PROBES in (2 + 20, 2 + 20 + 1)


def test_a_job_stopped_by_one_prompt_among_many_fails_the_same_when_every_prompt_is_counted(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 1000
    films = [f"Film {i:04d}" for i in range(100)]
    inputs = _titles(tmp_path, [*films, "Long " + " ".join(["word"] * 900)])
    sampled = cli(tmp_path, "job=movie_details", inputs, "preflight.sample=10", node=node)
    counted = node.tokenized
    whole = cli(tmp_path, "job=movie_details", inputs, "preflight.sample=null", node=node,
                run="whole")  # fmt: skip
    assert sampled.returncode == whole.returncode == 2
    assert error_lines(sampled) == error_lines(whole)
    assert counted <= 1 + 10 + 1 + FRAMING_PROBES
    assert node.tokenized - counted == 101 + FRAMING_PROBES


def test_where_no_node_says_its_context_only_the_sample_is_counted(
    tmp_path: Path, node: LoopbackNode
) -> None:
    films = [f"Film {i:04d}" for i in range(200)]
    proc = cli(tmp_path, "job=movie_details", _titles(tmp_path, films), "preflight.sample=10",
               "dry_run=true", "preflight.probe_speed=never", node=node)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert node.tokenized in (10, 11) and not node.seen
    assert "estimated by bytes from a sample of 10" in proc.stderr


def test_preflight_sample_null_counts_every_prompt(tmp_path: Path, node: LoopbackNode) -> None:
    node.context = 2048
    films = [f"Film {i:04d}" for i in range(100)]
    proc = cli(tmp_path, "job=movie_details", _titles(tmp_path, films), "preflight.sample=null",
               node=node)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert node.tokenized == 100 + FRAMING_PROBES
    found = report(tmp_path)["estimate"]
    assert found["sampled"] == 0 and found["counted"] == 100
    assert found["prompt_tokens"] == found["prompt_tokens_counted"]


def test_a_job_no_larger_than_the_sample_is_counted_whole(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.context = 2048
    proc = cli(tmp_path, "job=movie_details", "preflight.sample=20", node=node)  # 20 films
    assert proc.returncode == 0, proc.stderr
    assert node.tokenized == 20 + FRAMING_PROBES
    found = report(tmp_path)["estimate"]
    assert found["sampled"] == 0 and found["counted"] == 20 and found["prompt_tokens"] > 0


def test_the_default_sample_is_a_few_hundred_and_must_be_positive() -> None:
    assert load("job=movie_details").preflight.sample == 300
    assert load("job=movie_details", "preflight.sample=null").preflight.sample is None
    with pytest.raises(ConfigError, match=r"preflight\.sample must be at least 1, got 0"):
        load("job=movie_details", "preflight.sample=0")


def test_the_report_page_says_the_prompt_tokens_are_estimated_from_a_sample(
    tmp_path: Path,
) -> None:
    from tests.test_report_page import write_run

    tally = TokenTally(context=2048)
    for i in range(40):
        tally.add(max_tokens=50, answers=1)
        if i < 4:
            tally.count(f"item-{i}", 30, room=50, sample_bytes=100)
    tally.leave_out(36, 3600)
    write_run(tmp_path, items=40, nodes=("alpha",), estimate=estimate(tally, speeds={}, prices={}))
    page = (tmp_path / "report.html").read_text()
    assert "<td>prompt tokens</td><td>about 1,200 (from a sample of 4)</td>" in page


async def test_rendering_the_prompts_is_not_charged_to_the_preflight_timeout(
    node: LoopbackNode, mock_clock: MockClock
) -> None:
    cfg = load("job=movie_details", "cluster=static", "preflight.timeout=5",
               f"cluster.nodes=[{{address: '{node.address}'}}]")  # fmt: skip

    def slow_to_render() -> Iterator[Work]:
        for work in prepare(cfg).work():
            mock_clock.jump(1.0)  # each of the 20 items takes a second to render
            yield work

    tally = TokenTally(context=None)
    nodes = remote_nodes(cfg.cluster, cfg.engine)
    reason = await count_tokens(slow_to_render(), nodes, cfg, tally, max_tokens=200)
    assert reason is None and tally.counted == 20 == node.tokenized
