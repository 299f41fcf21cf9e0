"""k candidates from one request (``job.candidates``): the acceptor, the config check, the
request it becomes, and the engine against a fake node answering ``n`` texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from runner._acceptance import first_passing, json_acceptor, refusing_truncated
from runner._checks import check
from runner._config import AnswerFormat, EngineConfig, JobConfig, ModelConfig, RunConfig
from runner._engine import Engine
from runner._errors import AnswerError, ConfigError
from runner._nodes import NodeSpec
from runner._request import Api, Completion, GenerationRequest, Style
from runner._sampling import sampling_params
from runner._work import Work

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
}
GOOD = '{"title": "Heat", "year": 1995}'
NO_YEAR = '{"title": "Heat"}'
PROSE = "I cannot answer that."


def candidates(*texts: str, reasons: tuple[str | None, ...] = ()) -> Completion:
    return Completion(text=texts[0], texts=texts, output_tokens=10 * len(texts),
                      finish_reason="stop", finish_reasons=reasons)  # fmt: skip


ACCEPT = first_passing(json_acceptor(SCHEMA, source="test"))


def test_the_first_passing_candidate_wins_and_the_ones_before_it_say_why() -> None:
    accepted = ACCEPT(candidates(PROSE, NO_YEAR, GOOD, GOOD.replace("Heat", "Ran")))
    assert accepted.answer == {"title": "Heat", "year": 1995}
    assert accepted.candidate == 2
    assert len(accepted.candidate_errors) == 2
    assert accepted.candidate_errors[0].startswith("candidate 0: ")
    assert "year" in accepted.candidate_errors[1]
    assert all("\n" not in e for e in accepted.candidate_errors)


def test_a_first_candidate_that_passes_wins_with_no_errors() -> None:
    accepted = ACCEPT(candidates(GOOD, PROSE))
    assert (accepted.candidate, accepted.candidate_errors) == (0, ())


def test_all_candidates_failing_raise_answer_error_so_a_reseed_follows() -> None:
    with pytest.raises(AnswerError, match="all 3 candidates refused") as caught:
        ACCEPT(candidates(PROSE, NO_YEAR, "{"))
    assert [r.split(":")[0] for r in caught.value.reasons] == [
        "candidate 0",
        "candidate 1",
        "candidate 2",
    ]


def test_each_candidate_is_judged_with_its_own_finish_reason() -> None:
    accept = first_passing(refusing_truncated(json_acceptor(SCHEMA, source="test")))
    cut = '{"title": "Heat", "year": 1995'  # needs repair: refused when cut off
    accepted = accept(candidates(cut, cut, reasons=("length", "stop")))
    assert accepted.candidate == 1
    assert "max_tokens" in accepted.candidate_errors[0]


def job(**fields: Any) -> RunConfig:
    base = JobConfig(name="j", answer=AnswerFormat.json, schema="s.json")
    base.input.path = "in.txt"
    for name, value in fields.items():
        setattr(base, name, value)
    return RunConfig(model=ModelConfig(name="m", engine="m"), job=base)


@pytest.mark.parametrize("k", [0, 17, -1])
def test_candidates_out_of_range_is_a_one_line_config_error(k: int) -> None:
    with pytest.raises(ConfigError, match=r"job.candidates must be in 1..16") as caught:
        check(job(candidates=k))
    assert "\n" not in str(caught.value)


def test_candidates_on_a_text_job_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="only json jobs"):
        check(job(candidates=4, answer=AnswerFormat.text, schema=None))


def test_candidates_become_n_and_change_the_resume_key() -> None:
    one, four = job(), job(candidates=4)
    assert "n" not in sampling_params(one.model, one.job)  # keys of one-answer jobs unchanged
    assert sampling_params(four.model, four.job)["n"] == 4

    def key(cfg: RunConfig) -> str:
        params = sampling_params(cfg.model, cfg.job)
        return GenerationRequest(Api.textsynth, Style.chat, "m", "p", params=params).key()

    assert key(one) != key(four)


# ----------------------------------------------------------------------- the engine


class NAnswers(httpx.AsyncBaseTransport):
    """A TextSynth node answering ``n`` texts: ``script[seed]`` (one per candidate)."""

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = script
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404, json={"error": "no route"})
        body = json.loads(request.content)
        self.bodies.append(body)
        await trio.sleep(1)
        texts = self.script[body["seed"]][: body.get("n", 1)]
        return httpx.Response(
            200,
            json={"text": texts, "reached_end": True, "input_tokens": 5,
                  "output_tokens": 7 * len(texts), "finish_reason": "stop"},
        )  # fmt: skip


async def run_one(script: dict[int, list[str]], *, n: int) -> tuple[NAnswers, dict[str, Any]]:
    transport = NAnswers(script)
    request = GenerationRequest(
        Api.textsynth, Style.completion, "m", "item", params={"max_tokens": 20, "n": n}, seed=10
    )
    work = Work("id0", 0, {}, request, request.key())
    records: list[dict[str, Any]] = []
    engine = Engine(
        [NodeSpec("127.0.0.1:1", "http://127.0.0.1:1", slots=1)],
        EngineConfig(stream=True, probe_interval=1.0),
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=records.append,
        transport=transport,
        acceptor=first_passing(json_acceptor(SCHEMA, source="test")),
    )
    await engine.run(iter([work]))
    return transport, records[0]


async def test_engine_keeps_the_winning_candidate_and_sends_n_unstreamed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, record = await run_one({10: [PROSE, GOOD, NO_YEAR]}, n=3)
    assert [(b["n"], "stream" in b) for b in transport.bodies] == [(3, False)]
    assert record["status"] == "ok"
    assert (record["candidate"], record["text"]) == (1, GOOD)
    assert len(record["candidate_errors"]) == 1
    assert record["output_tokens"] == 21  # every candidate's tokens


async def test_engine_reseeds_by_n_when_every_candidate_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, record = await run_one({10: [PROSE, NO_YEAR], 12: [NO_YEAR, GOOD]}, n=2)
    assert [b["seed"] for b in transport.bodies] == [10, 12]  # seeds 10, 11 then 12, 13
    assert record["status"] == "ok"
    assert record["seeds"] == [10, 12]
    assert record["candidate"] == 1
    assert "all 2 candidates refused" in record["errors"][0]


# ----------------------------------------------------------------------- the real model


@pytest.mark.model
def test_movie_details_with_4_candidates_on_the_real_model_records_the_winner(
    tmp_path: Path,
) -> None:
    from tests.test_e2e_local import read_jsonl, runner

    titles = tmp_path / "titles.txt"
    titles.write_text("Heat\nAlien\n", encoding="utf-8")
    done = runner(tmp_path, "job=movie_details", "job.candidates=4", f"job.input.path={titles}")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    records = read_jsonl(tmp_path / "run" / "results.jsonl")
    assert len(records) == 2
    for record in records:
        if record["status"] == "ok":
            assert 0 <= record["candidate"] < 4
            assert len(record["candidate_errors"]) == record["candidate"]
            assert json.loads(record["text"]) == record["answer"] or record["repair"] != "strict"
    assert any(r["status"] == "ok" for r in records)
