"""Shards: one job split among several runners that run at the same time, each on its own part.

Shard *I* of *N* (0-based, as Slurm array ids and Kubernetes completion indexes usually are)
takes the items whose request key (:attr:`~runner._work.Work.key`) falls in it:
:func:`shard_of` reads the first 8 bytes of the SHA-256 of the key as a number and takes it
modulo *N*. Every item is in exactly one shard, the shards are balanced (the key is a hash of
the request), and an item stays in its shard however the input is reordered or grown.

Which shard a runner is (:func:`resolve_shard`), first match wins:

1. ``shard=I/N`` on the command line (``shard=0/1`` is the whole job: it ignores the
   environment below);
2. ``SLURM_ARRAY_TASK_ID`` (a Slurm job array) with ``shards=N``, else
   ``SLURM_ARRAY_TASK_COUNT``;
3. ``JOB_COMPLETION_INDEX`` (a Kubernetes Indexed Job) with ``shards=N`` (Kubernetes does not
   say how many completions there are).

Nodes (:func:`shard_nodes`): with ``shard_nodes=split`` node *j* of the cluster's list goes
to shard *j* mod *N* (at least *N* nodes are needed); with ``share`` every shard uses every
node, and each node's slots are divided among the shards (:func:`share_slots`), so the
shards together never send a node more than its slots. Pure functions: the environment is
passed in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._config import ClusterKind, JobKind, RunConfig, ShardNodes
from ._errors import ConfigError
from ._nodes import NodeSpec
from ._report import ShardLine
from ._work import Work

SLURM_INDEX = "SLURM_ARRAY_TASK_ID"
SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
K8S_INDEX = "JOB_COMPLETION_INDEX"

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_HOW = "0-based: shard=0/N to shard=N-1/N"


@dataclass(frozen=True)
class Shard:
    """One shard of a job.

    Attributes:
        index: which shard, 0-based.
        count: how many shards the job is split into (at least 2).
        source: where the runner learnt it (``shard=1/4``, ``SLURM_ARRAY_TASK_ID=1,
            shards=4``...), for messages and ``report.json``.
    """

    index: int
    count: int
    source: str

    @property
    def label(self) -> str:
        """``1/4``."""
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """``shard-1-of-4``: the shard's part of file and folder names."""
        return f"shard-{self.index}-of-{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the item of this request key is in this shard."""
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """The shard (0-based) of ``count`` that the item of request key ``key`` falls in."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` → ``(1, 4)``, checked: ``0 <= I < N``.

    Raises:
        ConfigError: naming the key and the value.
    """
    found = _SHARD.fullmatch(text)
    if found is None:
        raise ConfigError(f"shard={text!r}: expected I/N, e.g. shard=0/4 ({_HOW})")
    index, count = int(found[1]), int(found[2])
    if count < 1:
        raise ConfigError(f"shard={text}: the shard count must be at least 1")
    if index >= count:
        raise ConfigError(
            f"shard={text}: shard {index} does not exist among {count} ({_HOW}, "
            f"here 0..{count - 1})"
        )
    return index, count


def resolve_shard(
    shard: str | None, shards: int | None, environ: Mapping[str, str]
) -> Shard | None:
    """The runner's shard (see the module docstring for the order); ``None``: the whole job.

    Raises:
        ConfigError: a bad ``shard``, ``shards`` or environment value, named with its value.
    """
    if shards is not None and shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    if shard is not None:
        index, count = parse_shard(shard)
        if shards is not None and shards != count:
            raise ConfigError(f"shard={shard} and shards={shards} disagree on the shard count")
        return _shard(index, count, f"shard={index}/{count}")
    if SLURM_INDEX in environ:
        index = _env_int(environ, SLURM_INDEX)
        if shards is not None:
            count, given = shards, f"shards={shards}"
        elif SLURM_COUNT in environ:
            count = _env_int(environ, SLURM_COUNT)
            given = f"{SLURM_COUNT}={count}"
        else:
            raise ConfigError(f"{SLURM_INDEX}={index} is set but not the count: set shards=N")
        hint = f"submit the array as --array=0-{count - 1}, or set shards=N"
        return _env_shard(SLURM_INDEX, index, count, given, hint=hint)
    if K8S_INDEX in environ:
        index = _env_int(environ, K8S_INDEX)
        if shards is None:
            raise ConfigError(
                f"{K8S_INDEX}={index} is set (a Kubernetes Indexed Job) but shards is not: "
                "set shards=N, the Job's completions"
            )
        hint = "set shards to the Job's completions"
        return _env_shard(K8S_INDEX, index, shards, f"shards={shards}", hint=hint)
    if shards is not None and shards > 1:
        raise ConfigError(
            f"shards={shards} is set but no shard index: set shard=I/{shards}, or run in a "
            f"Slurm job array ({SLURM_INDEX}) or a Kubernetes Indexed Job ({K8S_INDEX})"
        )
    return None


def _shard(index: int, count: int, source: str) -> Shard | None:
    return None if count == 1 else Shard(index, count, source)


def _env_int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    if not value.strip().isdigit():
        raise ConfigError(f"{name}={value!r}: not a shard index (a whole number from 0)")
    return int(value)


def _env_shard(name: str, index: int, count: int, given: str, *, hint: str) -> Shard | None:
    if count < 1:
        raise ConfigError(f"{given}: the shard count must be at least 1")
    if index >= count:
        raise ConfigError(
            f"{name}={index} is out of range for {count} shards ({given}; shards are "
            f"0-based: 0..{count - 1}): {hint}"
        )
    return _shard(index, count, f"{name}={index}, {given}")


def run_dir_suffix(shard: str | None, shards: int | None, environ: Mapping[str, str]) -> str:
    """``_shard-1-of-4`` for the default run directory's name, ``""`` for the whole job (and
    for a bad value, which :func:`resolve_shard` reports when the run starts)."""
    try:
        found = resolve_shard(None if shard is None else str(shard), shards, environ)
    except ConfigError:
        return ""
    return f"_{found.name}" if found is not None else ""


def shard_nodes(nodes: Sequence[NodeSpec], shard: Shard, mode: ShardNodes) -> list[NodeSpec]:
    """The nodes of the cluster's list this shard uses before the roll call: with ``split``
    node *j* when *j* mod *N* is the shard; with ``share`` all of them (their slots are
    divided once they are known, :func:`share_slots`).

    Raises:
        ConfigError: ``split`` with fewer nodes than shards.
    """
    if mode is ShardNodes.share:
        return list(nodes)
    if len(nodes) < shard.count:
        raise ConfigError(
            f"shard={shard.label}: {len(nodes)} nodes cannot be split among {shard.count} "
            "shards (node j goes to shard j mod N): set shard_nodes=share to let every shard "
            "use every node with its slots divided, or run fewer shards"
        )
    return [node for j, node in enumerate(nodes) if j % shard.count == shard.index]


def nodes_rule(shard: Shard, mode: ShardNodes, *, local: bool) -> str:
    """How this shard's nodes are chosen, in words (dry run, probe)."""
    if local:
        return "its own local cluster"
    if mode is ShardNodes.share:
        return f"every node, its slots divided among {shard.count} shards (shard_nodes=share)"
    return f"node j of the list when j mod {shard.count} = {shard.index} (shard_nodes=split)"


def share_slots(nodes: Sequence[NodeSpec], shard: Shard) -> list[NodeSpec]:
    """Each node with this shard's share of its slots: ``slots // N``, plus one for *r* of
    the shards when ``slots % N == r``: for node *j*, shards *j*, *j+1*... *j+r-1* (mod *N*),
    so the shards' shares of a node add up to its slots and the remainders are spread. A
    node whose share is 0 is left out.

    Raises:
        ConfigError: this shard's share is 0 on every node.
    """
    count = shard.count
    shared = []
    for j, node in enumerate(nodes):
        extra = 1 if (shard.index - j) % count < node.slots % count else 0
        slots = node.slots // count + extra
        if slots:
            shared.append(replace(node, slots=slots))
    if not shared:
        total = sum(node.slots for node in nodes)
        raise ConfigError(
            f"shard={shard.label} with shard_nodes=share: the nodes' {total} slots, divided "
            f"among {count} shards, leave this shard none: run fewer shards"
        )
    return shared


@dataclass(frozen=True)
class JobFingerprint:
    """What every shard of one job agrees on, whichever shard it is.

    Attributes:
        items: the items of the whole job.
        digest: ``sha256:...`` of every item's index, id and request key, in input order.
        inputs: ``sha256:...`` of every item's index and input fields
            (:func:`input_fingerprint`): what a merge checks an input file against before
            it names the lines that have no result (an OpenAI Batch job's).
    """

    items: int
    digest: str
    inputs: str = ""


def job_fingerprint(works: Iterable[Work]) -> JobFingerprint:
    """The fingerprint of the whole job's work: shards of one job (same input, template,
    model, parameters) have the same one, and merging checks it."""
    digest = hashlib.sha256()
    inputs = hashlib.sha256()
    count = 0
    for work in works:
        digest.update(f"{work.index}\t{work.id}\t{work.key}\n".encode())
        inputs.update(_input_line(work.index, work.input))
        count += 1
    return JobFingerprint(count, f"sha256:{digest.hexdigest()}", f"sha256:{inputs.hexdigest()}")


def input_fingerprint(items: Iterable[tuple[int, dict[str, Any]]]) -> str:
    """``sha256:...`` of the ``(index, input fields)`` of every item, in input order (the
    fields as canonical JSON: a file re-indented or with its keys reordered has the same
    one, a line changed, added, removed or moved another)."""
    inputs = hashlib.sha256()
    for index, data in items:
        inputs.update(_input_line(index, data))
    return f"sha256:{inputs.hexdigest()}"


def _input_line(index: int, data: dict[str, Any]) -> bytes:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{index}\t{blob}\n".encode("utf-8", errors="surrogatepass")


def shard_line(
    cfg: RunConfig,
    shard: Shard,
    items: int,
    whole: JobFingerprint,
    store_path: Path,
    input_path: Path,
) -> ShardLine:
    """What the ``report.json`` of ``shard`` says of it (``items``: the shard's; ``whole``:
    the whole job's fingerprint; ``store_path``: the shard's journal; ``input_path``: the
    job's input file, as the plan found it).

    An OpenAI Batch job's ``output`` also says what the merge needs to write its two files:
    the ``model`` the bodies name, and the ``input`` file with its ``input_fingerprint``, to
    name the lines that have no result in an incomplete merge."""
    output = cfg.job.output
    batch = {  # the merge writes the batch files
        "kind": "batch",
        "model": cfg.model.engine,
        "input": str(input_path),
        "input_fingerprint": whole.inputs,
    }
    return ShardLine(
        index=shard.index,
        count=shard.count,
        source=shard.source,
        items=items,
        job_items=whole.items,
        fingerprint=whole.digest,
        nodes="local" if cfg.cluster.kind is ClusterKind.local else cfg.shard_nodes.value,
        journal=str(store_path),
        output={
            "filename": output.filename,
            "shape": output.shape.value,
            "key_field": output.key_field,
            "format": output.format.value,
            **(batch if cfg.job.kind is JobKind.batch else {}),
        },
    )
