"""Choice jobs (``answer: choice``): labels scored with ``/logprob``, the softmax, the checks,
the wire, the engine over fake nodes, and the real local model (structure only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hydra import compose, initialize_config_dir

from runner._checks import to_run_config
from runner._choice import choice_acceptor, labels_of, probabilities
from runner._config import AnswerFormat, EngineConfig, RunConfig, register
from runner._engine import Engine
from runner._errors import AnswerError, ConfigError, ProtocolError, ServerError
from runner._nodes import NodeSpec
from runner._plan import prepare
from runner._request import (
    Api,
    ChoiceNormalise,
    Choices,
    Completion,
    GenerationRequest,
    LabelScore,
    Style,
)
from runner._textsynth import build_logprob, parse_logprob
from runner._work import Work

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GENRES = ["drama", "comedy", "science fiction", "horror", "animation", "action"]


def load(*overrides: str) -> RunConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_config(compose("config", overrides=list(overrides)))


def score(label: str, logprob: float, num_tokens: int = 1) -> LabelScore:
    return LabelScore(label=label, logprob=logprob, num_tokens=num_tokens)


# ------------------------------------------------------------------ softmax


def test_probabilities_are_the_softmax_of_the_summed_logprobs() -> None:
    probs = probabilities(
        [score("a", math.log(0.2)), score("b", math.log(0.6))], ChoiceNormalise.none
    )
    assert probs == pytest.approx({"a": 0.25, "b": 0.75})
    assert list(probs) == ["a", "b"]


def test_probabilities_sum_to_one_even_for_very_unlikely_labels() -> None:
    probs = probabilities(
        [score("a", -5000.0), score("b", -5001.0), score("c", -9000.0)], ChoiceNormalise.none
    )
    assert math.fsum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert probs["a"] > probs["b"] > 0 and probs["c"] == 0.0


def test_tokens_normalisation_divides_each_logprob_by_its_token_count() -> None:
    scores = [score("short", -2.0, 1), score("long label", -3.0, 3)]
    assert probabilities(scores, ChoiceNormalise.none)["short"] > 0.5
    by_token = probabilities(scores, ChoiceNormalise.tokens)
    assert by_token["long label"] == pytest.approx(1 / (1 + math.exp(-1)))


def test_the_acceptor_keeps_the_likeliest_label_and_the_first_of_a_tie() -> None:
    accept = choice_acceptor(ChoiceNormalise.none)
    answer = accept(Completion("", scores=(score("x", -3.0), score("y", -1.0)))).answer
    assert answer["label"] == "y" and set(answer["probabilities"]) == {"x", "y"}
    tie = accept(Completion("", scores=(score("x", -1.0), score("y", -1.0)))).answer
    assert tie["label"] == "x" and tie["probabilities"] == {"x": 0.5, "y": 0.5}


def test_the_acceptor_refuses_an_answer_without_scores() -> None:
    with pytest.raises(AnswerError):
        choice_acceptor(ChoiceNormalise.none)(Completion("drama"))


# ------------------------------------------------------------------ labels and config


def test_a_field_of_labels_is_a_list_or_bar_separated_text() -> None:
    assert labels_of(["yes", "no"], where="x") == ("yes", "no")
    assert labels_of("yes | no|maybe", where="x") == ("yes", "no", "maybe")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["only"], "at least 2 labels"),
        ("a||b", "a label is empty"),
        (["a", "b", "a"], "label 'a' repeats"),
        (None, "got missing"),
        (3, "got a int"),
    ],
)
def test_bad_labels_in_a_field_are_one_line_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        labels_of(value, where="films.csv:3: job.choice_field 'labels'")
    assert "\n" not in str(info.value) and "films.csv:3" in str(info.value)


def test_the_example_job_composes_as_a_choice_job() -> None:
    cfg = load("job=film_genre")
    assert cfg.job.answer is AnswerFormat.choice and cfg.job.choices == GENRES


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=smollm2_openai"], "not supported on OpenAI-compatible nodes"),
        (["job.choices=[drama]"], "at least 2 labels"),
        (["job.choices=[drama,drama]"], "label 'drama' repeats"),
        (["job.choices=[drama,'']"], "a label is empty"),
        (["job.choice_field=labels"], "exactly one of job.choices"),
        (["job.choices=null"], "exactly one of job.choices"),
        (["job.system=Be brief."], "job.system: a choice job generates nothing"),
        (["job.answer=text"], "job.choices is set but job.answer is 'text'"),
    ],
)
def test_a_bad_choice_job_fails_at_start_up_with_one_line(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load("job=film_genre", *overrides)
    assert "\n" not in str(info.value)


def test_an_openai_choice_job_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "runner", "job=film_genre", "model=smollm2_openai",
            "cluster=local_openai", f"hydra.run.dir={tmp_path / 'run'}",
            f"journal_dir={tmp_path / 'journal'}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not supported on OpenAI-compatible nodes" in proc.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()


# ------------------------------------------------------------------ plan and wire


def test_the_plan_asks_to_score_every_label_with_no_sampling() -> None:
    plan = prepare(load("job=film_genre"))
    work = next(plan.work())
    assert work.request.choices is not None and work.request.choices.labels == tuple(GENRES)
    assert work.request.params == {}
    assert work.request.prompt == "The genre of the film Forrest Gump is"


def test_labels_prefix_and_normalisation_are_in_the_resume_key() -> None:
    base = GenerationRequest(Api.textsynth, Style.chat, "e", "p", choices=Choices(("a", "b")))
    others = [
        GenerationRequest(Api.textsynth, Style.chat, "e", "p"),
        GenerationRequest(Api.textsynth, Style.chat, "e", "p", choices=Choices(("a", "c"))),
        GenerationRequest(Api.textsynth, Style.chat, "e", "p", choices=Choices(("a", "b"), "\n")),
        GenerationRequest(
            Api.textsynth,
            Style.chat,
            "e",
            "p",
            choices=Choices(("a", "b"), normalise=ChoiceNormalise.tokens),
        ),
    ]
    assert len({base.key(), *(o.key() for o in others)}) == 5
    assert base.with_seed(9).key() == base.key()


def test_a_label_is_sent_as_the_prompt_context_and_prefixed_continuation() -> None:
    request = GenerationRequest(
        Api.textsynth, Style.chat, "my/engine", "The film is", choices=Choices(("drama", "x"))
    )
    assert build_logprob(request, "drama") == (
        "/v1/engines/my%2Fengine/logprob",
        {"context": "The film is", "continuation": " drama"},
    )


def test_a_logprob_answer_is_read_and_a_bad_one_is_a_protocol_error() -> None:
    body = json.dumps({"logprob": -1.5, "num_tokens": 2, "is_greedy": True, "input_tokens": 9})
    got = parse_logprob(200, body.encode(), label="drama", node="n")
    assert got == LabelScore("drama", -1.5, 2, is_greedy=True, input_tokens=9)
    for bad in ({"num_tokens": 1}, {"logprob": "x", "num_tokens": 1}, {"logprob": -1.0}):
        with pytest.raises(ProtocolError):
            parse_logprob(200, json.dumps(bad).encode(), label="drama", node="n")
    with pytest.raises(ServerError):
        parse_logprob(500, b'{"error": "boom"}', label="drama", node="n")


# ------------------------------------------------------------------ the engine, fake nodes


def _fake_nodes(broken: str) -> httpx.MockTransport:
    """Nodes scoring a label by its length; the node ``broken`` answers 500 to every other
    logprob request (its first label succeeds, so a failure mid-item is exercised)."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/logprob"), request.url.path
        if request.url.host == broken:
            calls["n"] += 1
            if calls["n"] % 2 == 0:
                return httpx.Response(500, json={"error": "boom"})
        body = json.loads(request.content)
        logprob = -float(len(body["continuation"]))
        return httpx.Response(200, json={"logprob": logprob, "num_tokens": 1, "is_greedy": False})

    return httpx.MockTransport(handler)


async def test_a_failed_logprob_call_moves_the_item_to_another_node(autojump_clock: Any) -> None:
    labels = ("drama", "comedy", "action")
    works = []
    for i in range(6):
        request = GenerationRequest(
            Api.textsynth, Style.chat, "e", f"film {i} is", seed=1, choices=Choices(labels)
        )
        works.append(Work(f"id{i}", i, {"n": i}, request, request.key()))
    records: list[dict[str, Any]] = []
    nodes = [NodeSpec("bad", "http://bad:1"), NodeSpec("good", "http://good:1")]
    engine = Engine(
        nodes,
        EngineConfig(hedge=False),
        api=Api.textsynth,
        style=Style.chat,
        engine_id="e",
        acceptor=choice_acceptor(ChoiceNormalise.none),
        on_result=records.append,
        transport=_fake_nodes("bad"),
    )
    await engine.run(iter(works))
    assert sorted(r["id"] for r in records) == [w.id for w in works]
    assert all(r["status"] == "ok" for r in records)
    assert all(r["answer"]["label"] == "drama" for r in records)  # shortest: likeliest here
    assert any(r["errors"] for r in records)  # some went wrong on "bad" first
    for r in records:
        assert [c["label"] for c in r["choices"]] == list(labels)
        assert all(c["num_tokens"] == 1 for c in r["choices"])


# ------------------------------------------------------------------ the real model


@pytest.mark.model
def test_film_genre_on_the_local_model_gives_a_label_and_probabilities_per_film(
    tmp_path: Path,
) -> None:
    films = tmp_path / "films.txt"
    films.write_text("Toy Story\nAlien\nThe Godfather\n")
    proc = subprocess.run(
        [
            sys.executable, "-m", "runner", "job=film_genre", f"job.input.path={films}",
            f"hydra.run.dir={tmp_path / 'run'}", f"journal_dir={tmp_path / 'journal'}",
            "progress=log",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    genres = json.loads((tmp_path / "run" / "film_genre.json").read_text())
    assert list(genres) == ["Toy Story", "Alien", "The Godfather"]
    for answer in genres.values():
        assert answer["label"] in GENRES
        assert list(answer["probabilities"]) == GENRES
        assert abs(math.fsum(answer["probabilities"].values()) - 1) < 1e-6
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for r in records:
        assert [c["label"] for c in r["choices"]] == GENRES
        assert all(c["num_tokens"] >= 1 and c["logprob"] <= 0 for c in r["choices"])


def test_labels_per_item_come_from_a_jsonl_list_or_a_csv_bar_string(tmp_path: Path) -> None:
    jsonl = tmp_path / "films.jsonl"
    jsonl.write_text('{"title": "Alien", "labels": ["horror", "comedy"]}\n')
    csv = tmp_path / "films.csv"
    csv.write_text("title,labels\nAlien,horror | comedy | drama\n")
    got = []
    for path in (jsonl, csv):
        cfg = load(
            "job=film_genre",
            f"job.input.path={path}",
            "job.input.format=auto",
            "job.choices=null",
            "job.choice_field=labels",
        )
        work = next(prepare(cfg).work())
        assert work.request.choices is not None
        got.append(work.request.choices.labels)
    assert got == [("horror", "comedy"), ("horror", "comedy", "drama")]


def test_an_item_with_bad_labels_stops_the_scan_naming_its_line(tmp_path: Path) -> None:
    csv = tmp_path / "films.csv"
    csv.write_text("title,labels\nAlien,horror|comedy\nHeat,crime\n")
    cfg = load(
        "job=film_genre",
        f"job.input.path={csv}",
        "job.input.format=csv",
        "job.choices=null",
        "job.choice_field=labels",
    )
    with pytest.raises(ConfigError, match=r"films.csv:3: job.choice_field 'labels'.*at least 2"):
        prepare(cfg).scan()


# ------------------------------------------------------------------ a loopback node


def test_a_choice_job_over_a_loopback_node_keeps_the_likeliest_label_and_is_reproducible(
    tmp_path: Path,
) -> None:
    """The loopback node's ``/logprob`` (tests/loopback_node.py) scores by a hash of the
    text: two runs give the same answers, and each is the softmax of its scores."""
    from tests.loopback_node import logprob_of, loopback_node
    from tests.test_merge import cli

    films = tmp_path / "films.txt"
    films.write_text("Toy Story\nAlien\nThe Godfather\n")
    job = ("job=film_genre", f"job.input.path={films}")
    with loopback_node() as node:
        for run in ("r0", "r1"):  # each with its own journal: everything is scored again
            proc = cli(tmp_path, *job, f"journal_dir={tmp_path / run}-j", nodes=(node,), run=run)
            assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (
        json.loads((tmp_path / r / "film_genre.json").read_text()) for r in ("r0", "r1")
    )
    assert first == second and list(first) == ["Toy Story", "Alien", "The Godfather"]
    for work in prepare(load(*job)).work():
        choices = work.request.choices
        assert choices is not None
        scores = [
            LabelScore(label, *logprob_of(work.request.prompt, choices.continuation(label)))
            for label in choices.labels
        ]
        expected = probabilities(scores, ChoiceNormalise.none)
        answer = first[work.input["title"]]
        assert answer["probabilities"] == pytest.approx(expected)
        assert answer["label"] == max(expected, key=lambda label: expected[label])
        assert node.seen[work.request.prompt] == 2 * len(GENRES)  # a request per label, twice
    records = [json.loads(x) for x in (tmp_path / "r0" / "results.jsonl").read_text().splitlines()]
    tokens = {c["label"]: c["num_tokens"] for r in records for c in r["choices"]}
    assert tokens["science fiction"] == 2 and tokens["drama"] == 1  # a token per word
