"""The pre-flight's bound on the real model: a prompt has at most one token per UTF-8 byte
plus ``TOKEN_SLACK``, so a prompt whose bound fits the context needs no count; and the
sample's estimate of a large job on the embedded local cluster is close to the full count."""

from __future__ import annotations

import random
import re
from pathlib import Path

import httpx
import pytest

from runner._estimate import TOKEN_SLACK, token_bound
from runner._plan import prepare
from runner._preflight import counted_text
from tests._realnode import RunningNode, real_node  # noqa: F401  (the session's node)
from tests.test_config import load
from tests.test_e2e_local import runner

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]

# texts a tokenizer may split finely: nothing, lone bytes, runs of spaces and digits, marks
# that combine, scripts of 2, 3 and 4 bytes a character, emoji sequences, special tokens
# written as text, control characters
HARD = [
    "",
    " ",
    "a",
    "\n",
    "\n\n\n\n",
    "   x",
    "\t \u00a0\u3000\u2009",
    "1234567890" * 20,
    "e\u0301" * 30,
    "東京タワーは高い。" * 5,
    "Привет, мир",
    "مرحبا بالعالم",
    "👍🏽👨‍👩‍👧‍👦🏳️‍🌈" * 10,
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀𓀁𓀂",
    "<|im_start|>user\nhi<|im_end|>",
    "<s></s><|endoftext|>",
    "\x00\x01\x07\x1b[0m",
    "\ufeffBOM",
    "a\u200bb\u200cc\u200dd",
]

# code points to draw random text from: ASCII, Latin-1, Greek, CJK, Hangul, emoji, ancient
_RANGES = [(0x20, 0x7E), (0xA0, 0xFF), (0x370, 0x3FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
           (0x1F300, 0x1F6FF), (0x13000, 0x1342F), (0x0300, 0x036F)]  # fmt: skip


def _random_texts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        low, high = rng.choice(_RANGES)
        mixed = rng.random() < 0.5
        chars = [
            chr(rng.randint(*(rng.choice(_RANGES) if mixed else (low, high))))
            for _ in range(rng.randint(1, 120))
        ]
        texts.append("".join(chars))
    return texts


def _job_prompts() -> list[str]:
    prompts = []
    for job in ("movie_details", "movie_synopsis", "film_genre"):
        plan = prepare(load(f"job={job}"))
        prompts += [counted_text(work.request) for work in plan.work()]
    return prompts


def _tokens(node: RunningNode, text: str) -> int:
    answer = httpx.post(node.endpoint("tokenize"), json={"text": text}, timeout=30)
    assert answer.status_code == 200, answer.text
    return len(answer.json()["tokens"])


def test_no_prompt_has_more_tokens_than_its_bytes_and_the_slack_on_the_real_model(
    real_node: RunningNode,  # noqa: F811
) -> None:
    texts = [*_job_prompts(), *HARD, *_random_texts(300)]
    texts += [" " + t for t in HARD] + [t + "\n" + t for t in HARD]
    worst = -TOKEN_SLACK
    for text in texts:
        size = len(text.encode("utf-8"))
        tokens = _tokens(real_node, text)
        assert tokens <= token_bound(size), (text, tokens, size)
        worst = max(worst, tokens - size)
    # a byte-level BPE: never more tokens than bytes, and the slack is not used up
    assert worst <= 0, worst


def test_the_real_models_english_prompts_are_far_below_their_bound(
    real_node: RunningNode,  # noqa: F811
) -> None:
    prompts = _job_prompts()
    tokens = sum(_tokens(real_node, p) for p in prompts)
    size = sum(len(p.encode()) for p in prompts)
    assert tokens < size / 3  # about 4 bytes a token: the bound is loose, so few are at risk


def _estimated(proc_err: str) -> tuple[int, bool]:
    said = re.search(r"(about )?([\d,]+) prompt tokens \((estimated)?", proc_err)
    assert said is not None, proc_err[-3000:]
    return int(said.group(2).replace(",", "")), said.group(3) is not None


def test_a_large_jobs_sampled_estimate_on_the_local_cluster_is_close_to_the_full_count(
    tmp_path: Path,
) -> None:
    films = [t for t in (ROOT / "prompts/movies.txt").read_text().splitlines() if t.strip()]
    titles = tmp_path / "titles.txt"
    titles.write_text("\n".join(f"{films[i % 20]} ({i})" for i in range(400)) + "\n")
    common = ("job=movie_details", f"job.input.path={titles}", "dry_run=true",
              "preflight.probe_speed=never")  # fmt: skip
    sampled = runner(tmp_path, *common, "preflight.sample=40", run="sampled")
    whole = runner(tmp_path, *common, "preflight.sample=null", run="whole")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert whole.returncode == 0, whole.stderr[-3000:]
    estimate, estimated = _estimated(sampled.stderr)
    exact, exact_estimated = _estimated(whole.stderr)
    assert estimated and not exact_estimated
    assert "from a sample of 40" in sampled.stderr
    assert estimate == pytest.approx(exact, rel=0.02)
