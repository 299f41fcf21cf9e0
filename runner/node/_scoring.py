"""TextSynth's token endpoints on a :class:`~runner.node._backend.Backend`: ``tokenize`` and
``logprob``.

``tokenize`` is llama-server's ``/tokenize``, with each token's bytes in base64 if asked.

``logprob`` needs the probability of given tokens. llama-server has no prompt
log-probabilities, so the continuation is *generated* under a grammar that allows exactly
its tokens (``<[id]>`` terminals), and each step reports the log-probability of the token
under the model's raw next-token distribution (``n_probs``; ``post_sampling_probs`` off):
the same quantity a full evaluation gives, checked against fixtures recorded with the
previous node (``tests/node/fixtures/logprob.json``).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from ._api import ApiError, LogprobRequest, TokenizeRequest
from ._results import BackendError

if TYPE_CHECKING:
    from ._backend import Backend


async def tokenize(backend: Backend, request: TokenizeRequest) -> dict[str, Any]:
    """The ``tokenize`` answer: token ids, and each token's bytes in base64 if asked."""
    body = {"content": request.text, "add_special": False, "parse_special": False}
    if not request.base64:
        answer = await backend.post("/tokenize", body)
        return {"tokens": answer["tokens"]}
    answer = await backend.post("/tokenize", body | {"with_pieces": True})
    pieces = answer["tokens"]
    return {
        "tokens": [p["id"] for p in pieces],
        "token_content": [base64.b64encode(_piece_bytes(p["piece"])).decode() for p in pieces],
    }


async def logprob(backend: Backend, request: LogprobRequest) -> dict[str, Any]:
    """The ``logprob`` answer: the continuation's log-probability given the context."""
    pieces = (
        await backend.post(
            "/tokenize",
            {"content": request.continuation, "add_special": False, "with_pieces": True},
        )
    )["tokens"]
    continuation = [piece["id"] for piece in pieces]
    n_ctx = backend.limits.n_ctx
    if not continuation:
        raise ApiError(400, "continuation: has no tokens")
    if len(continuation) >= n_ctx:
        raise ApiError(400, f"continuation: longer than the context ({n_ctx})")
    context = await backend.token_ids(request.context, special=True)
    prompt = backend.fit(context, room=n_ctx - len(continuation))
    if all(isinstance(piece["piece"], str) for piece in pieces):
        steps = await _forced_steps(backend, prompt.tokens, continuation)
    else:
        # llama.cpp's grammar rejects every token after one that is only part of a
        # UTF-8 character, and reports no probability for such a token: score token by
        # token, reading a partial token's log-probability from the whole distribution.
        steps = []
        for index, piece in enumerate(pieces):
            prefix = prompt.tokens + continuation[:index]
            if isinstance(piece["piece"], str):
                steps += await _forced_steps(backend, prefix, [piece["id"]])
            else:
                steps.append(await _distribution_step(backend, prefix, piece["id"]))
    return {
        "logprob": sum(score for score, _ in steps),
        "num_tokens": len(continuation),
        "is_greedy": all(greedy for _, greedy in steps),
        "input_tokens": len(prompt.tokens) + len(continuation),
    }


async def _forced_steps(
    backend: Backend, prompt: list[int], tokens: list[int]
) -> list[tuple[float, bool]]:
    """Generate exactly ``tokens`` after ``prompt`` (a grammar of token terminals) and
    return each one's log-probability and whether it was the most likely token."""
    body = {
        "prompt": prompt,
        "n_predict": len(tokens),
        "grammar": "root ::= " + " ".join(f"<[{token}]>" for token in tokens),
        "temperature": 0.0,
        "samplers": ["temperature"],
        "n_probs": 1,
        "post_sampling_probs": False,  # the model's own distribution, not the sampler's
        "ignore_eos": True,
        "cache_prompt": True,
    }
    steps = (await backend.post("/completion", body)).get("completion_probabilities") or []
    if [step.get("id") for step in steps] != tokens:
        raise BackendError(f"logprob: the engine scored {len(steps)} of {len(tokens)} tokens")
    return [(float(s["logprob"]), s["top_logprobs"][0]["id"] == s["id"]) for s in steps]


async def _distribution_step(backend: Backend, prompt: list[int], token: int) -> tuple[float, bool]:
    """The log-probability of ``token`` after ``prompt`` from the whole next-token
    distribution (a plain one-character token is generated to carry it)."""
    body = {
        "prompt": prompt,
        "n_predict": 1,
        "logit_bias": [[backend.plain_token, 100.0]],
        "temperature": 0.0,
        "samplers": ["logit_bias", "temperature"],
        "n_probs": backend.limits.n_vocab,
        "post_sampling_probs": False,
        "ignore_eos": True,
        "cache_prompt": True,
    }
    steps = (await backend.post("/completion", body)).get("completion_probabilities") or []
    if len(steps) != 1:
        raise BackendError("logprob: the engine returned no distribution")
    ranked = steps[0]["top_logprobs"]
    for entry in ranked:
        if entry["id"] == token:
            return float(entry["logprob"]), ranked[0]["id"] == token
    raise BackendError(f"logprob: token {token} missing from the distribution")


def _piece_bytes(piece: str | list[int]) -> bytes:
    """A token's bytes: llama-server gives a string, or a list of bytes when the token
    is not valid UTF-8 on its own (part of a multi-byte character)."""
    return piece.encode() if isinstance(piece, str) else bytes(piece)
