"""Work items: a prompt and the answer length it is meant to get.

An item's prompt carries a marker (``<<sim item=… tokens=…>>``) that the simulated nodes
read, so every strategy asks for exactly the same work and the lower bound is exact. Large
item sets are written to and read from a JSON-lines file one item at a time, so a memory
benchmark measures the strategy rather than the harness.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._answers import make_marker

_TOPICS = (
    "a lighthouse keeper", "a river in spring", "an old map", "a night train", "a glass city",
    "a patient robot", "a mountain village", "a lost letter", "a winter market", "a comet",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One unit of work.

    Attributes:
        id: stable id (the position in the input, as text).
        prompt: the prompt, with its marker.
        tokens: the intended answer length, in tokens (before any ``max_tokens`` clip).
    """

    id: str
    prompt: str
    tokens: int

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "prompt": self.prompt, "tokens": self.tokens}


def item(index: int, tokens: int) -> Item:
    """The ``index``-th item, meant to get a ``tokens``-token answer."""
    topic = _TOPICS[index % len(_TOPICS)]
    marker = make_marker(item=index, tokens=tokens)
    return Item(str(index), f"Write a short story about {topic} (#{index}). {marker}", tokens)


def generate(
    count: int, *, seed: int = 1, median: float = 120.0, sigma: float = 0.6, max_tokens: int = 512
) -> Iterator[Item]:
    """``count`` items with lognormal answer lengths, clipped to ``[1, max_tokens]``."""
    rng = random.Random(seed)
    for index in range(count):
        tokens = round(rng.lognormvariate(math.log(median), sigma))
        yield item(index, max(1, min(tokens, max_tokens)))


def write_file(path: Path, items: Iterator[Item]) -> int:
    """Write ``items`` to ``path`` as JSON lines; returns how many were written."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for it in items:
            out.write(json.dumps(it.to_json()) + "\n")
            count += 1
    return count


def read_file(path: Path) -> Iterator[Item]:
    """The items of a JSON-lines file, read lazily."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                data = json.loads(line)
                yield Item(str(data["id"]), data["prompt"], int(data["tokens"]))
