"""The chat template's own tokens (a chat request's *framing*), measured on a node.

The pre-flight counts a chat request's text, its system prompt and messages joined
(:func:`runner._preflight.counted_text`), with the nodes' tokenize. The node reads more: the
model's chat template wraps every message in role markers, opens the assistant's turn and,
without a system prompt, may add a default one. Those tokens depend on the *shape* of the
messages (their roles in order, :func:`shape_of`), not on what the messages say (measured on
SmolLM2: docs/preflight.md), so they are measured once per shape: a node that answered the
roll call gets the run's first request of that shape with ``max_tokens`` 1, and the input
tokens it reports, less the tokenize count of the same request's counted text, is the
framing. The same request with every message reduced to :data:`NEUTRAL` is measured too and
the larger of the two is kept: text that the template parses as control tokens (or strips)
makes one request's framing smaller than the others'.

At most :data:`MAX_SHAPES` shapes are measured; a shape beyond them is fitted from the
measured ones (:func:`fitted`). A shape whose probes all fail (no input token count in the
answer, an error) takes :func:`framing_bound`, and the estimate says that it was estimated,
not measured. Completions and choice jobs have no framing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._errors import NodeError
from ._request import GenerationRequest, Style
from ._work import Work

if TYPE_CHECKING:
    from ._client import NodeClient

Shape = tuple[str, ...]
"""The roles of a chat request's messages, in order, as the node receives them."""

MAX_SHAPES = 16  # shapes measured (two probes each) in one pre-flight; the rest are fitted
NEUTRAL = "Hello"  # the content of every message in a shape's second probe
BOUND_BASE = 64
BOUND_PER_MESSAGE = 8
"""The framing assumed when it cannot be measured: ``BOUND_BASE`` and ``BOUND_PER_MESSAGE``
per message (SmolLM2 measures 30 for one message without a system prompt, 48 for five)."""


def shape_of(request: GenerationRequest) -> Shape | None:
    """The roles of ``request``'s messages (``None``: not a chat request, or a choice job,
    which is scored as raw text)."""
    if request.style is not Style.chat or request.choices is not None:
        return None
    messages = (request.body or {}).get("messages")
    if isinstance(messages, list):  # an OpenAI Batch line, sent as it is
        return tuple(str(m.get("role")) if isinstance(m, dict) else "?" for m in messages)
    turns = len(request.messages or (request.prompt,))
    system = () if request.system is None else ("system",)
    return (*system, *("assistant" if i % 2 else "user" for i in range(turns)))


def framing_bound(shape: Shape) -> int:
    """The framing assumed for ``shape`` when it could not be measured."""
    return BOUND_BASE + BOUND_PER_MESSAGE * len(shape)


def probe_request(request: GenerationRequest) -> GenerationRequest:
    """``request`` as a framing probe: the same messages and settings, one token, one answer."""
    params = {k: v for k, v in request.params.items() if k != "n"} | {"max_tokens": 1}
    body = request.body
    if body is not None:
        dropped = ("max_tokens", "max_completion_tokens", "n")
        body = {k: v for k, v in body.items() if k not in dropped} | {"max_tokens": 1}
    return replace(request, params=params, body=body)


def neutral(request: GenerationRequest) -> GenerationRequest:
    """``request`` with every message's content (the system prompt's too) :data:`NEUTRAL`."""
    body = request.body
    if body is not None and isinstance(body.get("messages"), list):
        turns = [m | {"content": NEUTRAL} if isinstance(m, dict) else m for m in body["messages"]]
        body = body | {"messages": turns}
    return replace(
        request,
        prompt=NEUTRAL,
        system=None if request.system is None else NEUTRAL,
        messages=None if request.messages is None else tuple(NEUTRAL for _ in request.messages),
        body=body,
    )


class NotMeasured(Exception):
    """A probe's answer cannot tell the framing (no input token count, a prompt cut)."""


async def framing_of(client: NodeClient, engine: str, request: GenerationRequest, text: str) -> int:
    """One probe: the input tokens ``client``'s node reads for ``request`` (sent as
    :func:`probe_request`) less the tokens of ``text``, its counted text.

    Raises:
        NodeError: the node failed one of the two requests.
        NotMeasured: its answer does not tell.
    """
    tokens = await client.count_tokens(engine, text)
    answer = await client.generate(probe_request(request), stream=False)
    if answer.input_tokens is None:
        raise NotMeasured(f"node {client.name} did not say its input tokens")
    if answer.truncated_prompt:
        raise NotMeasured(f"node {client.name} cut the probe's prompt")
    return answer.input_tokens - tokens


def _has_system(shape: Shape) -> bool:
    return any(role in ("system", "developer") for role in shape)


@dataclass
class ShapeFraming:
    """The framing of one shape, as the pre-flight used it.

    Attributes:
        roles: the shape.
        tokens: its framing: tokens added to the count of each of its prompts.
        measured: measured on a node (``False``: fitted or the bound; ``source`` says why).
        source: where the figure comes from.
        items: the prompts of this shape it was added to.
    """

    roles: Shape
    tokens: int
    measured: bool
    source: str
    items: int = 0

    def to_json(self) -> dict[str, Any]:
        """The entry of ``report.json``'s ``estimate.chat_framing``."""
        return {
            "roles": list(self.roles),
            "tokens": self.tokens,
            "measured": self.measured,
            "source": self.source,
            "items": self.items,
        }


def fitted(shape: Shape, known: Sequence[ShapeFraming]) -> ShapeFraming:
    """The framing of a shape left unmeasured, from the measured shapes with a system prompt
    as it has one or not: the most of theirs, each grown by the largest step per message
    measured between two of them (else :data:`BOUND_PER_MESSAGE`) for each message more;
    :func:`framing_bound` when none is like it."""
    same = [k for k in known if k.measured and _has_system(k.roles) == _has_system(shape)]
    if not same:
        source = f"bound: more than {MAX_SHAPES} message shapes, none like it measured"
        return ShapeFraming(shape, framing_bound(shape), False, source)
    steps = [
        math.ceil((b.tokens - a.tokens) / (len(b.roles) - len(a.roles)))
        for a in same
        for b in same
        if len(b.roles) > len(a.roles)
    ]
    step = max(0, *steps) if steps else BOUND_PER_MESSAGE
    tokens = max(k.tokens + step * max(0, len(shape) - len(k.roles)) for k in same)
    source = f"fitted from {len(same)} measured shapes (more than {MAX_SHAPES} shapes)"
    return ShapeFraming(shape, tokens, False, source)


class Framing:
    """The framing of each shape met in one pre-flight: measured as shapes appear
    (:meth:`learn`), then added to each prompt (:meth:`take`).

    Args:
        text_of: the text the pre-flight counts for a request.
        engine: the engine id (tokenize's).
        context: the context prompts are checked against. Without one (no node said it)
            nothing is measured, as nothing is checked: every framing is 0, and the
            estimate says that the chat template was not counted.
    """

    def __init__(
        self, text_of: Callable[[GenerationRequest], str], engine: str, *, context: int | None
    ) -> None:
        self._text_of = text_of
        self._engine = engine
        self._unmeasured = None if context is not None else "no node said its context"
        self._shapes: dict[Shape, ShapeFraming] = {}

    async def learn(self, client: NodeClient, works: Iterable[Work]) -> None:
        """Measure on ``client``'s node the shapes of ``works`` not met before."""
        for work in works:
            shape = shape_of(work.request)
            if shape is None or shape in self._shapes:
                continue
            if self._unmeasured is not None:
                found = ShapeFraming(shape, 0, False, f"not counted: {self._unmeasured}")
            elif len(self._shapes) < MAX_SHAPES:
                found = await self._measure(client, work.request, shape)
            else:
                found = fitted(shape, list(self._shapes.values()))
            self._shapes[shape] = found

    async def _measure(
        self, client: NodeClient, request: GenerationRequest, shape: Shape
    ) -> ShapeFraming:
        """Two probes (the request, and :func:`neutral` of it); the larger framing kept."""
        seen: list[int] = []
        failures: list[str] = []
        for probe in (request, neutral(request)):
            try:
                seen.append(await framing_of(client, self._engine, probe, self._text_of(probe)))
            except NodeError as exc:
                failures.append(f"node {client.name}: {exc}")
            except NotMeasured as exc:
                failures.append(str(exc))
        if seen:
            return ShapeFraming(shape, max(0, *seen), True, f"measured on {client.name}")
        source = f"bound, not measured: {failures[0]}"
        return ShapeFraming(shape, framing_bound(shape), False, source)

    def take(self, request: GenerationRequest) -> int:
        """The framing to add to ``request``'s count (its shape learnt before)."""
        shape = shape_of(request)
        if shape is None:
            return 0
        found = self._shapes[shape]
        found.items += 1
        return found.tokens

    def records(self) -> tuple[dict[str, Any], ...]:
        """Every shape's framing as ``report.json`` keeps it, the shapes in the order met."""
        return tuple(found.to_json() for found in self._shapes.values() if found.items)


def framing_line(records: Sequence[dict[str, Any]]) -> str:
    """The estimate's line on the chat template's tokens (``records``: :meth:`Framing.records`)."""
    tokens = sorted({r["tokens"] for r in records})
    span = f"{tokens[0]:,}" if len(tokens) == 1 else f"{tokens[0]:,} to {tokens[-1]:,}"
    shapes = (
        f"messages {', '.join(records[0]['roles'])}"
        if len(records) == 1
        else f"{len(records)} message shapes"
    )
    guessed = [r for r in records if not r["measured"]]
    if not guessed:
        how = ", ".join(sorted({r["source"] for r in records}))
    elif all(r["source"].startswith("not counted") for r in guessed):
        return f"chat template: {guessed[0]['source']}"
    else:
        how = (
            f"estimated, not measured, for {len(guessed)} of {len(records)} shapes "
            f"({guessed[0]['source']})"
        )
    return f"chat template: {span} tokens added to each prompt ({shapes}); {how}"
