"""One model: a llama.cpp instance, the single thread that runs it, and its queue.

A llama.cpp context holds one conversation's state, so it serves one request at a time. Every
call that touches the context (generation, logprob) runs on the model's own worker thread,
one after another, and only while the request holds the model's :class:`~._queue.Turn`.
Work that only reads the vocabulary (tokenizing, chat templating, compiling a grammar) is
thread-safe and runs before the request queues, so a bad request fails without waiting.

llama-cpp-python's own ``create_completion`` is not used: the node needs prompt truncation,
stop strings that never leak into a stream, and exact token counts, so it drives
``Llama.generate`` itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import threading
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

from ._api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Limits,
    LogprobRequest,
    Sampling,
    TokenizeRequest,
)
from ._cfg import ModelSpec
from ._queue import QueueFull, Turn, Turns
from ._text import TextAssembler

T = TypeVar("T")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The chat template used when a model file carries none."""

GRAMMAR_CACHE_SIZE = 32


@dataclass(frozen=True)
class Prompt:
    """Prompt tokens ready for the model.

    Attributes:
        tokens: what the model evaluates.
        truncated: the beginning of the prompt was dropped to fit the context.
    """

    tokens: list[int]
    truncated: bool = False


@dataclass(frozen=True)
class Outcome:
    """One finished generation.

    Attributes:
        text: the generated text, without the stop string that ended it.
        output_tokens: tokens generated (the end-of-generation token is not counted).
        finish_reason: ``stop`` (end token or stop string) or ``length`` (max_tokens).
    """

    text: str
    output_tokens: int
    finish_reason: str


class Engine:
    """One model served under the engine id ``spec.name``.

    Args:
        spec: the model's name and GGUF file.
        n_threads: llama.cpp threads.
        n_ctx: context size in tokens.
        max_queue: requests that may wait while one runs.

    Raises:
        ValueError: llama.cpp could not load the file.
    """

    def __init__(self, spec: ModelSpec, *, n_threads: int, n_ctx: int, max_queue: int) -> None:
        self.name = spec.name
        self._llama = llama_cpp.Llama(
            model_path=str(spec.path),
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_ctx=n_ctx,
            verbose=False,
        )
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self.limits = Limits(n_ctx=self._llama.n_ctx(), n_vocab=self._llama.n_vocab())
        self.turns = Turns(max_queue)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{spec.name}")
        self._bos = self._llama.tokenize(b"", add_bos=True)  # [] when the model adds no BOS
        self.has_chat_template = bool(self._llama.metadata.get("tokenizer.chat_template"))
        self._chat = _chat_formatter(self._llama, self._vocab)
        self._grammars: dict[str, LlamaGrammar] = {}
        self._grammars_lock = threading.Lock()

    # --- on the event loop

    async def acquire(self) -> Turn:
        """Wait for this model; raises ApiError 503 when its queue is full."""
        try:
            return await self.turns.acquire()
        except QueueFull as exc:
            raise ApiError(
                503, f"engine {self.name!r}: busy and {exc}; retry later (max_queue)"
            ) from exc

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model's thread (call only while holding a turn)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def submit(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` on the model's thread without waiting: it runs before anything
        queued later, so clean-up submitted before releasing a turn happens before the
        next request's work. After :meth:`close` there is nothing left to clean up."""
        with contextlib.suppress(RuntimeError):  # "cannot schedule new futures after shutdown"
            self._thread.submit(fn)

    def close(self) -> None:
        """Drop queued work, wait for the running call, free the model."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._llama.close()

    # --- thread-safe preparation (reads only the vocabulary)

    def completion_prompt(self, request: CompletionRequest) -> Prompt:
        """Tokenize a completions prompt, dropping its beginning if it does not fit."""
        tokens = self._llama.tokenize(request.prompt.encode(), add_bos=True, special=False)
        return self._fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

    def chat_prompt(self, request: ChatRequest) -> Prompt:
        """Apply the model's chat template and tokenize, dropping the beginning if needed."""
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        for index, content in enumerate(request.messages):
            messages.append({"role": "assistant" if index % 2 else "user", "content": content})
        try:
            text = self._chat(messages=messages).prompt  # type: ignore[arg-type]
        except Exception as exc:  # a template may raise anything; it is the caller's input
            raise ApiError(400, f"messages: the chat template refused them: {exc}") from exc
        tokens = self._llama.tokenize(text.encode(), add_bos=False, special=True)
        return self._fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

    def grammar(self, sampling: Sampling) -> LlamaGrammar | None:
        """The grammar that constrains decoding (from ``schema`` or ``grammar``), if any.

        Raises:
            ApiError: 400 when the schema cannot be converted or the grammar does not parse.
        """
        if sampling.schema is not None:
            field, key = "schema", "schema:" + json.dumps(sampling.schema, sort_keys=True)
        elif sampling.grammar is not None:
            field, key = "grammar", "grammar:" + sampling.grammar
        else:
            return None
        with self._grammars_lock:
            cached = self._grammars.get(key)
        if cached is not None:
            return cached
        if sampling.schema is not None:
            try:
                gbnf = json_schema_to_gbnf(json.dumps(sampling.schema))
            except Exception as exc:  # the converter raises many types on bad schemas
                raise ApiError(400, f"schema: cannot be turned into a grammar: {exc}") from exc
        else:
            gbnf = key.removeprefix("grammar:")
        grammar = LlamaGrammar.from_string(gbnf, verbose=False)
        # llama.cpp crashes on a grammar it cannot parse, so try it on its own first.
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        if not sampler:
            raise ApiError(400, f"{field}: llama.cpp cannot parse the grammar")
        llama_cpp.llama_sampler_free(sampler)
        with self._grammars_lock:
            if len(self._grammars) >= GRAMMAR_CACHE_SIZE:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        """The ``tokenize`` answer: token ids, and each token's bytes in base64 if asked."""
        tokens = self._llama.tokenize(request.text.encode(), add_bos=False, special=False)
        body: dict[str, Any] = {"tokens": tokens}
        if request.base64:
            body["token_content"] = [
                base64.b64encode(self._llama.detokenize([t], special=True)).decode() for t in tokens
            ]
        return body

    # --- on the model's thread, holding a turn

    def generate(
        self, prompt: Prompt, sampling: Sampling, grammar: LlamaGrammar | None, index: int = 0
    ) -> Generator[str, None, Outcome]:
        """Generate one completion; yields text pieces as they become final.

        With a seed, the whole prompt is evaluated afresh: reusing a cached prefix changes
        how the prompt is batched, which can change the logits slightly and so the text.
        """
        llama = self._llama
        if sampling.seed:
            llama.reset()
            seed = (sampling.seed + index) % 2**31
        else:
            seed = secrets.randbelow(2**31 - 1) + 1
        llama.set_seed(seed)
        text = TextAssembler(sampling.stop)
        count, finish = 0, "length"
        tokens = llama.generate(
            prompt.tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=0.0,
            typical_p=sampling.typical_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repetition_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            logits_processor=_logit_bias(sampling.logit_bias),
            grammar=grammar,
        )
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                count += 1
                piece = text.push(llama.detokenize([token]))
                if piece:
                    yield piece
                if text.stopped:
                    finish = "stop"
                    break
                if count >= sampling.max_tokens:
                    break
        finally:
            tokens.close()
        rest = text.finish()
        if rest:
            yield rest
        return Outcome(text=text.text, output_tokens=count, finish_reason=finish)

    def complete(
        self, prompt: Prompt, sampling: Sampling, grammar: LlamaGrammar | None
    ) -> list[Outcome]:
        """Generate ``sampling.n`` completions one after another."""
        return [drain(self.generate(prompt, sampling, grammar, i)) for i in range(sampling.n)]

    def logprob(self, request: LogprobRequest) -> dict[str, Any]:
        """The ``logprob`` answer: the continuation's log-probability given the context.

        Evaluates the context, then the continuation one token at a time, reading the
        next-token distribution before each continuation token.
        """
        llama = self._llama
        continuation = llama.tokenize(request.continuation.encode(), add_bos=False)
        if len(continuation) >= self.limits.n_ctx:
            raise ApiError(400, f"continuation: longer than the context ({self.limits.n_ctx})")
        context = llama.tokenize(request.context.encode(), add_bos=True)
        prompt = self._fit(context, room=self.limits.n_ctx - len(continuation))
        llama.reset()
        llama.eval(prompt.tokens)
        total, greedy = 0.0, True
        for position, token in enumerate(continuation):
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(self.limits.n_vocab,)
            )
            total += log_softmax_at(logits, token)
            greedy = greedy and int(np.argmax(logits)) == token
            if position + 1 < len(continuation):
                llama.eval([token])
        return {
            "logprob": total,
            "num_tokens": len(continuation),
            "is_greedy": greedy,
            "input_tokens": len(prompt.tokens) + len(continuation),
        }

    # --- helpers

    def _fit(self, tokens: list[int], *, room: int) -> Prompt:
        """Keep the last ``room`` tokens (and the BOS token, if the model uses one)."""
        if not tokens:
            tokens = self._bos or [self._llama.token_eos()]
        if len(tokens) <= room:
            return Prompt(tokens)
        head = self._bos if tokens[: len(self._bos)] == self._bos else []
        return Prompt(head + tokens[len(tokens) - (room - len(head)) :], truncated=True)


def drain(steps: Generator[str, None, T]) -> T:
    """Run a generator to its end and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def step(steps: Generator[str, None, T]) -> tuple[bool, str | T]:
    """Advance a generator once: ``(False, piece)`` or, at its end, ``(True, value)``.

    (A ``StopIteration`` cannot cross an executor future, hence this wrapper.)
    """
    try:
        return False, next(steps)
    except StopIteration as stop:
        return True, stop.value


def log_softmax_at(logits: npt.NDArray[np.float32], token: int) -> float:
    """``log(softmax(logits)[token])``, computed stably in float64."""
    values = logits.astype(np.float64)
    top = float(values.max())
    return float(values[token] - top - np.log(np.exp(values - top).sum()))


def _logit_bias(bias: Mapping[int, float]) -> llama_cpp.LogitsProcessorList | None:
    if not bias:
        return None
    ids = np.fromiter(bias.keys(), dtype=np.intc, count=len(bias))
    values = np.fromiter(bias.values(), dtype=np.single, count=len(bias))

    def add_bias(
        _input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        biased = scores.copy()
        biased[ids] += values
        return biased

    return llama_cpp.LogitsProcessorList([add_bias])


def _chat_formatter(llama: llama_cpp.Llama, vocab: Any) -> Jinja2ChatFormatter:
    def token_text(token: int) -> str:
        return llama_cpp.llama_vocab_get_text(vocab, token).decode() if token >= 0 else ""

    eos, bos = llama.token_eos(), llama.token_bos()
    return Jinja2ChatFormatter(
        template=llama.metadata.get("tokenizer.chat_template") or CHATML,
        eos_token=token_text(eos),
        bos_token=token_text(bos),
        stop_token_ids=[eos],
    )
