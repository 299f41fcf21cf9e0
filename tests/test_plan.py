"""A job's plan: its acceptor (answers cut off by ``max_tokens``) and where the paths a job
names are looked up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner._checks import to_run_config
from runner._config import RunConfig, Truncated, register
from runner._errors import AnswerError
from runner._plan import prepare
from runner._request import Completion

CONF = Path(__file__).resolve().parents[1] / "conf"
WHOLE = {
    "title": "Heat",
    "release_year": 1995,
    "director": "Michael Mann",
    "genre": "Crime",
    "main_actors": ["Al Pacino", "Robert De Niro"],
}
CUT = json.dumps(WHOLE)[: json.dumps(WHOLE).index("Niro")]  # repairable, still valid


def load(*overrides: str) -> RunConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_config(compose("config", overrides=list(overrides)))


def test_truncated_answers_are_repaired_by_default() -> None:
    cfg = load("job=movie_details")
    assert cfg.job.truncated is Truncated.repair
    accepted = prepare(cfg).acceptor(Completion(CUT, finish_reason="length"))
    assert accepted.step == "repaired" and accepted.answer["title"] == "Heat"


@pytest.mark.parametrize(
    ("job", "text"),
    [("movie_details", CUT), ("movie_synopsis", "Two men, one city, and a long")],
)
def test_with_truncated_reject_an_answer_cut_off_by_max_tokens_is_a_content_failure(
    job: str, text: str
) -> None:
    acceptor = prepare(load(f"job={job}", "job.truncated=reject")).acceptor
    with pytest.raises(AnswerError, match=r"cut off at max_tokens.*job\.truncated=reject"):
        acceptor(Completion(text, finish_reason="length"))
    assert acceptor(Completion(text, finish_reason="stop")).answer is not None


def test_with_truncated_reject_whole_json_that_hit_the_limit_is_kept() -> None:
    """An answer that parses as it came was not cut off in any way that matters."""
    acceptor = prepare(load("job=movie_details", "job.truncated=reject")).acceptor
    accepted = acceptor(Completion(json.dumps(WHOLE), finish_reason="length"))
    assert (accepted.step, accepted.answer) == ("strict", WHOLE)
