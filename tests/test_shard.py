"""Shards (runner/_shard.py): which items and nodes a shard takes, and which shard a runner is."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._config import ShardNodes
from runner._errors import ConfigError
from runner._nodes import NodeSpec
from runner._request import Api, GenerationRequest, Style
from runner._shard import (
    Shard,
    job_fingerprint,
    parse_shard,
    resolve_shard,
    run_dir_suffix,
    shard_nodes,
    shard_of,
    share_slots,
)
from runner._work import Work


def key(i: int, salt: str = "") -> str:
    """A request key like the runner's: a hex SHA-256."""
    return hashlib.sha256(f"{salt}{i}".encode()).hexdigest()


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.text(min_size=1), min_size=1, max_size=50), count=st.integers(2, 64))
def test_every_key_is_in_exactly_one_shard(keys: list[str], count: int) -> None:
    for k in keys:
        holders = [i for i in range(count) if Shard(i, count, "test").holds(k)]
        assert holders == [shard_of(k, count)]


@settings(max_examples=25, deadline=None)
@given(count=st.integers(2, 16), salt=st.text(max_size=8))
def test_shards_are_balanced_within_ten_percent(count: int, salt: str) -> None:
    items = 2_000 * count  # 2,000 expected per shard: 10 % is more than 4 standard deviations
    sizes = Counter(shard_of(key(i, salt), count) for i in range(items))
    assert set(sizes) == set(range(count))
    assert all(abs(size - 2_000) <= 200 for size in sizes.values()), sizes


def test_a_key_stays_in_its_shard_whatever_else_is_in_the_job() -> None:
    assert shard_of(key(7), 4) == shard_of(key(7), 4)
    assert [shard_of(key(i), 4) for i in range(5)] == [shard_of(key(i), 4) for i in range(5)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/4", (0, 4)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("0/1", (0, 1))],
)
def test_shard_values_are_read_as_a_0_based_index_and_a_count(
    text: str, expected: tuple[int, int]
) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5/4", "shard=5/4: shard 5 does not exist among 4"),
        ("4/4", "here 0..3"),
        ("x", "shard='x': expected I/N"),
        ("1", "shard='1': expected I/N"),
        ("-1/4", "expected I/N"),
        ("0/0", "shard=0/0: the shard count must be at least 1"),
    ],
)
def test_a_bad_shard_value_is_one_line_naming_the_key_and_value(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_shard(text)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


SLURM = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}


@pytest.mark.parametrize(
    ("shard", "shards", "environ", "expected"),
    [
        (None, None, {}, None),
        ("1/4", None, {}, (1, 4, "shard=1/4")),
        ("1/4", 4, {}, (1, 4, "shard=1/4")),
        ("1/4", None, SLURM, (1, 4, "shard=1/4")),  # the command line wins
        ("0/1", None, SLURM, None),  # the whole job, whatever the environment says
        (None, None, SLURM, (2, 4, "SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_COUNT=4")),
        # a resubmitted task (sbatch --array=2) has a count of 1: shards= says the real one
        (
            None,
            4,
            {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "1"},
            (2, 4, "SLURM_ARRAY_TASK_ID=2, shards=4"),
        ),
        (None, 3, {"JOB_COMPLETION_INDEX": "0"}, (0, 3, "JOB_COMPLETION_INDEX=0, shards=3")),
        (
            None,
            3,
            {**SLURM, "JOB_COMPLETION_INDEX": "0"},
            (2, 3, "SLURM_ARRAY_TASK_ID=2, shards=3"),
        ),
        (None, 1, {"JOB_COMPLETION_INDEX": "0"}, None),
        (None, 1, {}, None),
    ],
)
def test_the_shard_comes_from_the_command_line_then_slurm_then_kubernetes(
    shard: str | None,
    shards: int | None,
    environ: dict[str, str],
    expected: tuple[int, int, str] | None,
) -> None:
    found = resolve_shard(shard, shards, environ)
    if expected is None:
        assert found is None
    else:
        assert found == Shard(*expected)


@pytest.mark.parametrize(
    ("shard", "shards", "environ", "fragment"),
    [
        ("1/4", 3, {}, "shard=1/4 and shards=3 disagree"),
        (None, 4, {}, "shards=4 is set but no shard index"),
        (None, 0, {}, "shards must be at least 1, got 0"),
        (
            None,
            None,
            {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"},
            "SLURM_ARRAY_TASK_ID=4 is out of range for 4 shards",
        ),
        (None, None, {"SLURM_ARRAY_TASK_ID": "x"}, "SLURM_ARRAY_TASK_ID='x': not a shard index"),
        (
            None,
            None,
            {"SLURM_ARRAY_TASK_ID": "1"},
            "SLURM_ARRAY_TASK_ID=1 is set but not the count",
        ),
        (None, None, {"JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETION_INDEX=1 is set"),
        (None, 2, {"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX=2 is out of range"),
        (None, 2, {"JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX='-1': not a shard index"),
    ],
)
def test_a_bad_shard_setting_or_environment_is_one_line_naming_it(
    shard: str | None, shards: int | None, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_shard(shard, shards, environ)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_shard_run_directory_ends_in_its_shard_and_a_bad_value_adds_nothing() -> None:
    assert run_dir_suffix("1/4", None, {}) == "_shard-1-of-4"
    assert run_dir_suffix(None, None, SLURM) == "_shard-2-of-4"
    assert run_dir_suffix(None, None, {}) == ""
    assert run_dir_suffix("5/4", None, {}) == ""  # the run reports it, with its exit status


def nodes(*slots: int) -> list[NodeSpec]:
    return [NodeSpec(f"n{j}", f"http://10.0.0.{j}:8080", slots=s) for j, s in enumerate(slots)]


def test_split_gives_node_j_to_shard_j_mod_n() -> None:
    listed = nodes(*[1] * 7)
    taken = [
        [n.name for n in shard_nodes(listed, Shard(i, 3, "t"), ShardNodes.split)] for i in range(3)
    ]
    assert taken == [["n0", "n3", "n6"], ["n1", "n4"], ["n2", "n5"]]


def test_split_refuses_fewer_nodes_than_shards_and_points_to_share() -> None:
    with pytest.raises(ConfigError, match=r"2 nodes cannot be split among 3 shards.*share"):
        shard_nodes(nodes(1, 1), Shard(0, 3, "t"), ShardNodes.split)
    assert len(shard_nodes(nodes(1, 1), Shard(0, 3, "t"), ShardNodes.share)) == 2


@settings(max_examples=100, deadline=None)
@given(slots=st.lists(st.integers(1, 40), min_size=1, max_size=6), count=st.integers(2, 9))
def test_shared_nodes_slots_add_up_over_the_shards_to_each_nodes_slots(
    slots: list[int], count: int
) -> None:
    listed = nodes(*slots)
    given_out: Counter[str] = Counter()
    for i in range(count):
        try:
            shares = share_slots(listed, Shard(i, count, "t"))
        except ConfigError:
            continue  # this shard got nothing anywhere
        assert all(node.slots >= 1 for node in shares)
        given_out.update({node.name: node.slots for node in shares})
    assert given_out == {node.name: node.slots for node in listed}


def test_a_shard_left_without_slots_is_refused() -> None:
    with pytest.raises(ConfigError, match="leave this shard none"):
        share_slots(nodes(1), Shard(1, 2, "t"))
    assert [n.slots for n in share_slots(nodes(1), Shard(0, 2, "t"))] == [1]


def work(i: int, prompt: str) -> Work:
    request = GenerationRequest(
        api=Api.textsynth, style=Style.chat, engine="m", prompt=prompt, params={}
    )
    return Work(id=f"id{i}", index=i, input={}, request=request, key=request.key())


def test_the_fingerprint_changes_with_any_items_request_or_their_order() -> None:
    base = [work(0, "a"), work(1, "b")]
    found = job_fingerprint(base)
    assert found.items == 2 and found.digest.startswith("sha256:")
    assert job_fingerprint(list(base)) == found
    assert job_fingerprint([work(0, "a"), work(1, "c")]).digest != found.digest
    assert job_fingerprint([work(0, "b"), work(1, "a")]).digest != found.digest
