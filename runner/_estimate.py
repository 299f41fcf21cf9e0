"""The estimate of a run before it starts, and the time it still needs while it runs (pure).

:class:`Estimate` is what the pre-flight (:mod:`runner._preflight`) learnt: the prompt tokens
of the items about to be sent, the most output tokens they can ask for, the prompts that do
not fit the context, the cluster's measured speed, and from those the longest the run should
take and what it should cost. It is printed before the run (and by a dry run) and kept in
``report.json`` beside what the run actually did. :func:`eta_seconds` is the running ETA,
counted in output tokens.

The prompt tokens of a large job are not all counted: the prompts that cannot be too long
(their bound, :data:`TOKEN_SLACK`) are left out but for a sample, and :class:`TokenTally`
scales the sample's tokens per byte to the bytes of the prompts left out.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._chat_framing import framing_line

EXAMPLES = 5  # prompts that do not fit the context named in the message and the estimate

TOKEN_SLACK = 4
"""Tokens a prompt may have beyond one per byte of its UTF-8 text: its bound is its bytes plus
this. Every token of a byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen) stands for at
least one byte of the text, and so does every token of a SentencePiece tokenizer with byte
fallback and no expanding normaliser (Llama 2, Mistral: a character it has no piece for is
one token per byte), which may add one more: the "▁" it puts before the text can be a token
of its own. The rest covers the BOS and EOS tokens a node's tokenize may add. (An NFKC
normaliser, as in T5's tokenizer, can expand a character into several and break the bound.)
"""


def token_bound(text_bytes: int) -> int:
    """The most tokens a prompt of ``text_bytes`` UTF-8 bytes can have (:data:`TOKEN_SLACK`)."""
    return text_bytes + TOKEN_SLACK


@dataclass(frozen=True)
class TooLong:
    """An item whose prompt and ``max_tokens`` do not fit the context."""

    id: str
    prompt_tokens: int
    max_tokens: int


@dataclass
class TokenTally:
    """Prompt and output tokens added up over the items, one at a time.

    Attributes:
        items: items added.
        counted: items whose prompt tokens were counted by the nodes.
        prompt_tokens: their prompt tokens.
        longest_prompt: the most tokens of one of them.
        output_tokens_max: the most output tokens the items can ask for (each request's
            ``max_tokens`` times its answers per request).
        too_long: items whose prompt and ``max_tokens`` do not fit ``context``;
            ``examples`` names the first few.
        at_risk: counted items whose bound (:func:`token_bound`) and ``max_tokens`` did not
            fit ``context``, so that only their count could tell.
        sampled, sample_bytes, sample_tokens: the counted items that are a sample of those
            left out, their UTF-8 bytes and their tokens.
        left_out, left_out_bytes: items not counted (each fits ``context`` by its bound),
            and their bytes; the sample's tokens per byte stand for theirs.
        left_out_framing: the chat template's tokens of the items left out
            (:mod:`runner._chat_framing`), added to their estimate as they are.
    """

    context: int | None = None
    items: int = 0
    counted: int = 0
    prompt_tokens: int = 0
    longest_prompt: int = 0
    output_tokens_max: int = 0
    too_long: int = 0
    examples: list[TooLong] = field(default_factory=list)
    at_risk: int = 0
    sampled: int = 0
    sample_bytes: int = 0
    sample_tokens: int = 0
    left_out: int = 0
    left_out_bytes: int = 0
    left_out_framing: int = 0

    def add(self, *, max_tokens: int, answers: int) -> None:
        """Add one item: its ``max_tokens`` and answers per request (0 for a choice job,
        which generates nothing)."""
        self.items += 1
        self.output_tokens_max += max_tokens * answers

    def count(
        self,
        id: str,
        prompt_tokens: int,
        *,
        room: int,
        at_risk: bool = False,
        sample_bytes: int | None = None,
        framing: int = 0,
    ) -> None:
        """Add an item's prompt tokens, with the tokens its answer needs beside them;
        ``at_risk`` when only its count could tell whether it fits, ``sample_bytes`` (its
        UTF-8 bytes) when it is one of the sample; ``framing``: its chat template's tokens,
        which the node reads beyond the counted text (not part of the sample's tokens per
        byte)."""
        self.counted += 1
        self.at_risk += at_risk
        if sample_bytes is not None:
            self.sampled += 1
            self.sample_bytes += sample_bytes
            self.sample_tokens += prompt_tokens
        prompt_tokens += framing
        self.prompt_tokens += prompt_tokens
        self.longest_prompt = max(self.longest_prompt, prompt_tokens)
        if self.context is not None and prompt_tokens + room > self.context:
            self.too_long += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(TooLong(id, prompt_tokens, room))

    def leave_out(self, items: int, text_bytes: int, framing: int = 0) -> None:
        """Add items whose prompts were not counted (their UTF-8 bytes and their chat
        templates' tokens in all): the sample stands for their text."""
        self.left_out += items
        self.left_out_bytes += text_bytes
        self.left_out_framing += framing

    def estimated_prompt_tokens(self) -> int | None:
        """Every item's prompt tokens: those counted, and for those left out the sample's
        tokens per byte times their bytes (per item when the sample has no bytes).
        ``None`` when not every item was counted or sampled for."""
        if self.items == 0 or self.counted + self.left_out != self.items:
            return None
        if not self.left_out:
            return self.prompt_tokens
        if not self.sampled:
            return None
        if self.sample_bytes:
            rest = self.left_out_bytes * self.sample_tokens / self.sample_bytes
        else:
            rest = self.left_out * self.sample_tokens / self.sampled
        return self.prompt_tokens + round(rest) + self.left_out_framing


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the count needs of one item: its id and resume key, its prompt's text and UTF-8
    bytes, the tokens its answer needs beside them (``room``: 0 for a choice job) and its
    chat template's own tokens (``framing``: :mod:`runner._chat_framing`)."""

    id: str
    key: str
    text: str
    bytes: int
    room: int
    framing: int = 0

    @property
    def bound(self) -> int:
        """The most tokens the node can read for it (:func:`token_bound` and its framing)."""
        return token_bound(self.bytes) + self.framing


@dataclass
class Sample:
    """A sample of ``size`` of the prompts offered: those whose resume keys hash lowest, so a
    uniform random one, and the same for the same work in any order; with the count and
    the bytes of every prompt offered, and the longest in bytes.

    Attributes:
        size: the prompts kept at most.
        offered: the prompts offered.
        bytes: their UTF-8 bytes.
        framing: their chat templates' tokens.
        longest: the prompt of the most bytes (``None`` before the first).
    """

    size: int
    offered: int = 0
    bytes: int = 0
    framing: int = 0
    longest: Prompt | None = None
    _kept: list[tuple[int, int, Prompt]] = field(default_factory=list)  # a heap: -rank first

    def offer(self, prompt: Prompt) -> None:
        """Count ``prompt`` in, and keep it if its key ranks among the ``size`` lowest."""
        self.offered += 1
        self.bytes += prompt.bytes
        self.framing += prompt.framing
        if self.longest is None or prompt.bytes > self.longest.bytes:
            self.longest = prompt
        digest = hashlib.blake2b(prompt.key.encode(), digest_size=8).digest()
        entry = (-int.from_bytes(digest, "big"), self.offered, prompt)
        if len(self._kept) < self.size:
            heapq.heappush(self._kept, entry)
        elif entry > self._kept[0]:  # a lower rank than the highest kept
            heapq.heapreplace(self._kept, entry)

    @property
    def whole(self) -> bool:
        """Every prompt offered is kept: counting them is counting them all."""
        return self.offered <= self.size

    def kept(self) -> list[Prompt]:
        """The prompts kept, in the order they were offered."""
        return [prompt for _, _, prompt in sorted(self._kept, key=lambda entry: entry[1])]

    def longest_left_out(self) -> Prompt | None:
        """The longest prompt in bytes when it is not kept (it is counted apart, for the
        estimate's ``longest_prompt``)."""
        kept = {id(prompt) for _, _, prompt in self._kept}
        return None if self.longest is None or id(self.longest) in kept else self.longest


@dataclass(frozen=True)
class Estimate:
    """What a run should take, from the pre-flight; ``report.json``'s ``estimate``.

    Attributes:
        items: the items about to be sent (those an earlier run answered left out).
        prompt_tokens: their prompt tokens (``None``: not counted, ``not_counted`` says why);
            estimated when ``sampled`` is not 0.
        longest_prompt: the most tokens of one prompt counted.
        context: the smallest context of the nodes, in tokens (``None``: no node said).
        too_long: items whose prompt and max_tokens do not fit it; ``examples`` the first.
        output_tokens_max: the most output tokens the items can ask for.
        tokens_per_s: the cluster's output tokens per second, all slots busy, from the speed
            probe (``None``: not probed, or no node answered it).
        seconds_max: the longest the run should take: ``output_tokens_max`` at that speed.
        price_per_hour: the priced nodes' hourly prices added up (``None``: no prices).
        cost_max: what ``seconds_max`` of the priced nodes costs.
        not_counted: why the prompt tokens were not counted, when they were not.
        counted: the prompts the nodes counted, one request each.
        at_risk: of those, the prompts whose bound (:func:`token_bound`) and max_tokens did
            not fit the context: counted so that the check of the context stays exact.
        sampled: of those, a sample standing for the prompts not counted, whose tokens are
            estimated from its tokens per byte; 0 when every prompt was counted.
        prompt_tokens_counted: the counted prompts' tokens (``prompt_tokens`` when
            ``sampled`` is 0).
        chat_framing: the chat template's tokens added to each prompt of a chat job, per
            message shape (:meth:`runner._chat_framing.ShapeFraming.to_json`): measured on a
            node, or estimated when it could not be (and then said).
    """

    items: int
    prompt_tokens: int | None
    longest_prompt: int | None
    context: int | None
    too_long: int
    examples: tuple[TooLong, ...]
    output_tokens_max: int
    tokens_per_s: float | None
    seconds_max: float | None
    price_per_hour: float | None
    cost_max: float | None
    not_counted: str | None = None
    counted: int = 0
    at_risk: int = 0
    sampled: int = 0
    prompt_tokens_counted: int | None = None
    chat_framing: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The estimate as ``report.json`` holds it."""
        value = asdict(self)
        value["examples"] = [asdict(e) for e in self.examples]
        value["chat_framing"] = list(self.chat_framing)
        return value


def estimate(
    tally: TokenTally,
    *,
    speeds: Mapping[str, float | None],
    prices: Mapping[str, float | None],
    not_counted: str | None = None,
    chat_framing: tuple[dict[str, Any], ...] = (),
) -> Estimate:
    """The estimate from a tally, each node's probed output tokens per second and its hourly
    price (by node name; ``None`` where unknown), and the chat framing the count used."""
    measured = [s for s in speeds.values() if s]
    tokens_per_s = sum(measured) if measured else None
    seconds = None
    if tokens_per_s and tally.output_tokens_max:
        seconds = tally.output_tokens_max / tokens_per_s
    priced = [p for p in prices.values() if p is not None]
    price = sum(priced) if priced else None
    cost = None if price is None or seconds is None else price * seconds / 3600
    prompt_tokens = tally.estimated_prompt_tokens()
    counted = prompt_tokens is not None
    return Estimate(
        items=tally.items,
        prompt_tokens=prompt_tokens,
        longest_prompt=tally.longest_prompt if counted else None,
        context=tally.context,
        too_long=tally.too_long,
        examples=tuple(tally.examples),
        output_tokens_max=tally.output_tokens_max,
        tokens_per_s=None if tokens_per_s is None else round(tokens_per_s, 2),
        seconds_max=None if seconds is None else round(seconds, 1),
        price_per_hour=price,
        cost_max=None if cost is None else round(cost, 6),
        not_counted=None if counted or tally.items == 0 else not_counted,
        counted=tally.counted,
        at_risk=tally.at_risk,
        sampled=tally.sampled if counted and tally.left_out else 0,
        prompt_tokens_counted=tally.prompt_tokens if counted else None,
        chat_framing=chat_framing,
    )


def too_long_message(found: Estimate) -> str:
    """The one line a run stops with when prompts do not fit the context."""
    first = found.examples[0]
    named = ", ".join(f"'{e.id}' ({e.prompt_tokens} tokens)" for e in found.examples)
    return (
        f"{found.too_long} of {found.items} prompts do not fit the context of {found.context} "
        f"tokens with max_tokens={first.max_tokens} (the node would drop their beginning): "
        f"{named}; shorten them, lower job.max_tokens, or set job.allow_prompt_truncation=true"
    )


def describe(found: Estimate) -> list[str]:
    """The estimate in a few lines, for the console."""
    if found.prompt_tokens is not None and found.sampled:
        tokens = (
            f"about {found.prompt_tokens:,} prompt tokens (estimated by bytes from a sample of "
            f"{found.sampled:,}; {found.counted:,} prompts counted, {found.at_risk:,} of them "
            f"long enough to be at risk; longest counted {found.longest_prompt:,})"
        )
    elif found.prompt_tokens is not None:
        tokens = f"{found.prompt_tokens:,} prompt tokens (longest {found.longest_prompt:,})"
    else:
        tokens = f"prompt tokens not counted ({found.not_counted or 'no items'})"
    context = f", context {found.context:,}" if found.context is not None else ""
    lines = [
        f"items: {found.items:,}; {tokens}{context}; "
        f"at most {found.output_tokens_max:,} output tokens"
    ]
    if found.chat_framing:
        lines.append(framing_line(found.chat_framing))
    if found.seconds_max is not None and found.tokens_per_s is not None:
        line = (
            f"time: at most {_duration(found.seconds_max)} at the probed "
            f"{found.tokens_per_s:,.1f} output tokens/s"
        )
        if found.cost_max is not None:
            line += f"; cost: at most {found.cost_max:,.4f} ({found.price_per_hour:g}/hour)"
        lines.append(line)
    elif found.output_tokens_max:
        lines.append(
            "time: not estimated before the run (no speed probe: preflight.probe_speed, or no "
            "node answered it); the ETA measures the run"
        )
    if found.too_long:
        lines.append(f"too long for the context: {found.too_long} prompts")
    return lines


def eta_seconds(
    *,
    items_left: int,
    answered: int,
    output_tokens: int,
    elapsed: float,
    tokens_per_answer: float | None,
    probed_tokens_per_s: float | None,
) -> float | None:
    """Seconds the run still needs, counted in output tokens: the items left times the
    output tokens of an answer (the mean observed once a few answers are in, until then the
    most an answer may have), at the output tokens per second observed so far (the probe's
    speed until the first tokens arrive). ``None`` when there is nothing to go on."""
    if items_left <= 0:
        return 0.0
    per_answer = output_tokens / answered if answered >= 3 else tokens_per_answer
    rate = output_tokens / elapsed if output_tokens and elapsed > 0 else probed_tokens_per_s
    if not per_answer or not rate:
        return None
    return items_left * per_answer / rate


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
