"""The failure policy: what happens after a request that did not end in an accepted answer.

One pure function, :func:`decide`, reads what happened (a :class:`Fault`, from the
exception by :func:`classify`) and what the item went through so far (:class:`History`)
and returns a :class:`Decision`: whether the item is sent again and where, after how long,
whether the node is paused, and whether the failure counts against the node and the item.
The engine carries decisions out; it decides nothing itself.

=============  =========================================  ==========  ====  =====  =======
fault          what happened                              again       node  item   delay
=============  =========================================  ==========  ====  =====  =======
transport      no connection, reset, DNS, TLS             other node  yes   yes    backoff
timeout        no answer in time, or a stall              other node  yes   yes    backoff
malformed      200 but not a valid answer                 other node  yes   yes    backoff
server         5xx, 408, 429 without ``Retry-After``      other node  yes   yes    backoff
refused        401, 403, 404: this node will not serve    other node  yes   yes    backoff
               us (key, engine id)
busy           503/429 with ``Retry-After``               any node    no    no     none;
                                                                                   node waits
bad_request    any other 4xx: the request itself is bad   nowhere     no    fails  —
rejected       the answer failed the job's checks (JSON   any node,   no    yes    none
               ladder, schema)
                                                          next seed
=============  =========================================  ==========  ====  =====  =======

"node" is whether the failure counts toward benching the node (``breaker_failures`` in a
row); "item" whether it counts toward the item's limit: ``max_attempts`` node failures,
``busy_retries`` busy answers, ``json_attempts`` answers, and ``retry_timeout`` seconds in
all. An item past a limit fails (a busy answer past its limit is then taken as the server
fault it has become). A bad request fails the item at once with the node's own
message: sending it again, anywhere, gets the same answer.

The backoff is written once, :func:`backoff`: nothing before the first retry (it goes to
another node), then ``backoff_initial`` doubling up to ``backoff_max``, with jitter. Benched
nodes are probed with the same formula from ``probe_interval``.

Why not ``stamina`` or ``tenacity``: both retry a call in place, sleeping in a loop around it.
Here a retry is a new request, usually to another node, picked by whichever worker is free
next; the wait is a time before which the item may not be taken, so the scheduler stays one
loop and a waiting item holds no task. Only the formula would be reused, and it is one line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._config import EngineConfig
from ._errors import (
    AnswerError,
    NodeBusy,
    NodeError,
    NodeTimeout,
    ProtocolError,
    ServerError,
)

TRANSIENT_4XX = frozenset({408, 429})
"""4xx statuses that say "not now" rather than "never": retried like a server fault."""

NODE_REFUSALS = frozenset({401, 403, 404})
"""4xx statuses that say this node will not serve us (a wrong key, an engine id it does
not have): nothing about the item, which another node may well serve."""


class Fault(enum.Enum):
    """What went wrong with one request (see the table in the module docstring)."""

    transport = "transport"
    timeout = "timeout"
    malformed = "malformed"
    server = "server"
    refused = "refused"
    busy = "busy"
    bad_request = "bad_request"
    rejected = "rejected"


class Where(enum.Enum):
    """Where an item goes next."""

    other_node = "other_node"  # any admitted node but the one that failed it, if there is one
    any_node = "any_node"
    nowhere = "nowhere"  # the item fails now


@dataclass(frozen=True)
class History:
    """What one item went through before this failure.

    Attributes:
        node_failures: earlier failures counted against the item (transport ... refused).
        busy: earlier busy answers.
        answers: earlier answers rejected by the acceptor.
        elapsed: seconds since the item was first sent.
    """

    node_failures: int = 0
    busy: int = 0
    answers: int = 0
    elapsed: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What to do after a failure.

    Attributes:
        where: where the item goes next (``nowhere``: it fails now).
        delay: seconds before the item may be sent again.
        node_pause: seconds the node takes nothing new (a busy node's ``Retry-After``).
        against_node: counts toward benching the node.
        against_item: counts toward the item's limit for this kind of failure.
        why: for a failed item, why it failed (empty otherwise).
    """

    where: Where
    delay: float = 0.0
    node_pause: float = 0.0
    against_node: bool = False
    against_item: bool = False
    why: str = ""


def classify(exc: NodeError | AnswerError) -> Fault:
    """The fault an exception of the client or the acceptor stands for."""
    if isinstance(exc, AnswerError):
        return Fault.rejected
    if isinstance(exc, NodeBusy):
        return Fault.busy
    if isinstance(exc, ServerError):
        if exc.status >= 500 or exc.status in TRANSIENT_4XX or exc.status < 400:
            return Fault.server
        return Fault.refused if exc.status in NODE_REFUSALS else Fault.bad_request
    if isinstance(exc, ProtocolError):
        return Fault.malformed
    if isinstance(exc, NodeTimeout):
        return Fault.timeout
    return Fault.transport


def backoff(n: int, *, initial: float, maximum: float) -> float:
    """The ``n``-th wait (from 0) of a doubling backoff: ``initial × 2ⁿ``, at most
    ``maximum``. Callers add jitter."""
    return min(maximum, initial * 2.0 ** min(max(0, n), 64))


def retry_delay(node_failures: int, settings: EngineConfig) -> float:
    """The wait before the next try of an item after its ``node_failures``-th counted
    failure: none after the first (it goes to another node), then the backoff."""
    if node_failures <= 1:
        return 0.0
    return backoff(
        node_failures - 2, initial=settings.backoff_initial, maximum=settings.backoff_max
    )


def probe_pause(failures: int, settings: EngineConfig) -> float:
    """The pause before the next probe of a benched node (or the next try of the last
    admitted node) after ``failures`` failed ones."""
    return backoff(failures, initial=settings.probe_interval, maximum=settings.backoff_max)


def decide(
    fault: Fault,
    history: History,
    settings: EngineConfig,
    *,
    retry_after: float = 0.0,
    message: str = "",
    node_failing: bool = False,
) -> Decision:
    """What to do after ``fault`` for an item with ``history``.

    Args:
        fault: what went wrong with this request.
        history: the item's earlier failures (not counting this one).
        settings: the engine's limits and backoff.
        retry_after: a busy node's advised pause, in seconds.
        message: the failure as one line, quoted in ``why``.
        node_failing: the node had already failed ``breaker_failures`` times in a row: a
            node fault there is the node's, not held against the item.
    """
    out_of_time = history.elapsed > settings.retry_timeout
    if fault is Fault.bad_request:
        return Decision(Where.nowhere, against_item=True, why=f"bad request: {message}")
    if fault is Fault.busy:
        if history.busy < settings.busy_retries and not out_of_time:
            return Decision(Where.any_node, node_pause=retry_after)
        fault = Fault.server  # still busy after all that: a failure like any other
    if fault is Fault.rejected:
        if history.answers + 1 >= settings.json_attempts:
            return Decision(Where.nowhere, against_item=True, why=message)
        return Decision(Where.any_node, against_item=True)
    counted = not node_failing
    failures = history.node_failures + counted
    if failures >= settings.max_attempts or out_of_time:
        return Decision(
            Where.nowhere,
            against_node=True,
            against_item=counted,
            why=f"gave up after {failures} node failures: {message}",
        )
    return Decision(
        Where.other_node,
        delay=retry_delay(failures, settings),
        against_node=True,
        against_item=counted,
    )


@dataclass
class RefusalStreak:
    """Whether a run's first requests are all refused alike: then a setting is wrong
    (``max_tokens``, a schema, a key, the engine id), not the items, and the run stops.

    Args:
        limit: how many refusals with one status stop the run (0: never).
    """

    limit: int
    count: int = 0
    status: int | None = None
    broken: bool = False  # a request ended otherwise: the streak can no longer stop the run

    def answered(self) -> None:
        """A request got an answer."""
        self.broken = True

    def failed(self, fault: Fault, status: int | None) -> bool:
        """A request failed with ``fault`` (``status``: its HTTP status, if any); True when
        that makes ``limit`` refusals with one status in a row from the run's start."""
        if self.broken or not self.limit or fault is Fault.busy:
            return False
        if fault not in (Fault.bad_request, Fault.refused) or self.status not in (None, status):
            self.broken = True
            return False
        self.status = status
        self.count += 1
        if self.count < self.limit:
            return False
        self.broken = True
        return True
