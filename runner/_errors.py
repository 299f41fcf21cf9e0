"""The runner's exceptions: one base class and a small tree.

::

    RunnerError
    ├── ConfigError           bad configuration, template, input, schema or inventory
    │   └── JournalLocked     another runner is running the same job (it holds the lock)
    ├── NodeError             one request to one node failed (the item is retried elsewhere)
    │   ├── TransportError    could not connect, connection reset, DNS, TLS...
    │   ├── NodeTimeout       no answer within the request timeout, or a stall
    │   ├── ServerError       HTTP status other than 200 (keeps status and raw body)
    │   │   └── NodeBusy      503/429 with Retry-After: up but full, come back later
    │   └── ProtocolError     200 but the body is not a valid TextSynth/OpenAI answer
    ├── AnswerError           the answer arrived but its content is unusable (bad JSON, schema)
    ├── ClusterUnavailable    no node could serve for longer than the allowed wait
    ├── RequestsRefused       the run's first requests all got the same 4xx: a bad setting
    └── StorageError          a file the run writes cannot be: read-only, full disk, not a folder

Third-party exceptions (httpx, jsonschema, Jinja2, OSError) are translated once, where they
happen, with ``raise ... from exc``. A failure of one item becomes a failure *record*, never an
exception that stops the batch; only ``ConfigError`` (before anything is sent),
``ClusterUnavailable``, ``RequestsRefused`` and ``StorageError`` end a run.
:func:`storage_errors` is the one translation of ``OSError`` for the files the run writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunnerError(Exception):
    """Base class of every error the runner raises on purpose."""


class ConfigError(RunnerError):
    """Raised before anything is sent when the configuration, a prompt template, the input
    file, a JSON Schema or an inventory is unusable. The message is one line that names the
    file, key or value and what is wrong."""


class JournalLocked(ConfigError):
    """Raised at start-up when another runner holds the lock of the job's journal
    (:mod:`runner._lock`): two runners on one job would both send everything. The message
    names the journal and the other runner's pid."""


class NodeError(RunnerError):
    """Raised when one request to one node fails for a reason that says nothing about the
    prompt: the same request may succeed on another node or later.

    Attributes:
        node: the node's name (``host:port``), when known.
        body: the raw response body, kept for diagnosis (may be empty).
    """

    def __init__(self, message: str, *, node: str = "", body: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.body = body


class TransportError(NodeError):
    """Raised when the connection to a node could not be made or broke mid-request."""


class NodeTimeout(NodeError):
    """Raised when a node did not answer within the request timeout, or sent no byte for
    the stall timeout."""


class ServerError(NodeError):
    """Raised when a node answered with an HTTP status other than 200.

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, message: str, *, status: int, node: str = "", body: str = "") -> None:
        super().__init__(message, node=node, body=body)
        self.status = status


class NodeBusy(ServerError):
    """Raised when a node answered 503 or 429 with a ``Retry-After`` header: it is up but
    has no room now. The engine sends the item again (there or elsewhere) and pauses the
    node for ``retry_after`` seconds, without counting a failure of node or item.

    Attributes:
        retry_after: the advised pause in seconds, already bounded
            (:data:`runner._connection.RETRY_AFTER_MAX`).
    """

    def __init__(
        self, message: str, *, status: int, retry_after: float, node: str = "", body: str = ""
    ) -> None:
        super().__init__(message, status=status, node=node, body=body)
        self.retry_after = retry_after


class ProtocolError(NodeError):
    """Raised when a node answered 200 but the body is not a valid answer: not JSON, an
    ``error`` key, no ``text``, or a stream that ended without ``reached_end: true``."""


class AnswerError(RunnerError):
    """Raised when an answer arrived intact but its content is unusable: no JSON could be
    parsed or repaired from it, or it does not validate against the job's schema. Retrying
    with a new seed may help; retrying on another node does not.

    Attributes:
        reasons: one line per step of the JSON ladder that failed.
    """

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class ClusterUnavailable(RunnerError):
    """Raised when no node could serve for longer than ``engine.no_node_timeout``; the run
    stops and everything finished so far stays in the journal."""


class RequestsRefused(RunnerError):
    """Raised when the first ``engine.bad_request_stop`` requests of a run all came back
    with the same 4xx status (other than 408/429): a setting is wrong (``max_tokens`` past
    the node's limit, a schema it cannot use, a wrong key or engine id), not the items. The
    run stops (exit 2); the items already failed are in ``results.jsonl``."""


class StorageError(RunnerError):
    """Raised when a file the run writes cannot be created or written: the run directory, the
    journal, its lock, ``report.json`` or the output sits in a read-only folder, under a path
    that is a file, or on a full disk. The run stops; what was journaled before is kept. The
    message is one line naming the file and the reason."""


@contextmanager
def storage_errors(path: Path | str, doing: str) -> Iterator[None]:
    """Translate an ``OSError`` raised while ``doing`` something to ``path`` (``"write"``,
    ``"create the run directory"``) into a one-line :class:`StorageError`."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{path}: cannot {doing}: {exc.strerror or exc}") from exc
