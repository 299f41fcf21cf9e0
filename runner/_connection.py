"""One node's HTTP connection: send one request, read its answer, translate httpx's errors.

:class:`NodeConnection` owns an ``httpx.AsyncClient`` (one connection pool per node) and
knows nothing of the node's protocol: :class:`~runner._client.NodeClient` builds the bodies
and parses the answers. httpx exceptions are translated here, once, into
:class:`~runner._errors.NodeError` subclasses that carry the node's name;
:meth:`NodeConnection.key_hidden` takes the node's API key out of every error raised inside
it, even one whose body quotes the request's headers.

Timeouts: connecting is bounded by ``connect_timeout``. While a streamed answer is read, no
byte for ``stall_timeout`` seconds is a stall (:class:`~runner._errors.NodeTimeout`); this is
checked both by httpx (per socket read) and by one trio cancel scope whose deadline moves with
every chunk, so it also holds for injected transports. A non-streamed answer sends nothing
until it is complete, so it has no stall check: the whole request is bounded by the caller's
cancel scope (``trio.fail_after(request_timeout)``), never here.

A 503 or 429 answer's ``Retry-After`` header is read here (:func:`retry_after_seconds`,
bounded to ``RETRY_AFTER_MIN``..``RETRY_AFTER_MAX``) and returned with the :class:`Reply`.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import math
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import trio

from ._errors import ConfigError, NodeError, NodeTimeout, ProtocolError, TransportError

ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body read before giving up on the rest
KEY_PLACEHOLDER = "[api key]"  # what an error quoting the node's key shows instead
BUSY_STATUSES = frozenset({429, 503})  # with Retry-After: "busy, come back"
RETRY_AFTER_MIN = 0.1  # seconds; a busy node is never asked again at once
RETRY_AFTER_MAX = 30.0  # seconds; a longer advice is cut to this
# The stall watch's deadline moves at most every STALL_SLACK * stall_timeout seconds, not on
# every chunk: a stall is seen between stall_timeout and (1 + STALL_SLACK) * stall_timeout
# after the last byte. (On a real connection httpx's read timeout sees it at stall_timeout
# exactly; the watch is for transports that apply no timeouts, and costs a clock read per
# chunk instead of a deadline update.)
STALL_SLACK = 1 / 16


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """The pause a ``Retry-After`` header advises, bounded to ``RETRY_AFTER_MIN``..``MAX``.

    Args:
        value: the header: delay-seconds (``"1"``) or an HTTP-date.
        now: the current wall-clock time (``time.time()``), for an HTTP-date.

    Returns:
        Seconds, or ``None`` when there is no header or it is not readable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, seconds))


@dataclass(frozen=True)
class Reply:
    """What :meth:`NodeConnection.exchange` got back."""

    status: int
    body: bytes  # empty for a 200 stream, which went to ``feed``
    retry_after: float | None = None  # the bounded Retry-After pause, if the node sent one


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every node's client. Building one loads the CA bundle (about
    50 ms of CPU): per node, a thousand-node cluster would spend most of a minute on it
    before its first request."""
    return httpx.create_ssl_context()


class NodeConnection:
    """One node's connection pool. Use as an async context manager.

    Args:
        base_url: the node's address, e.g. ``http://10.0.0.5:8088``.
        name: the node's name in errors (``host:port``).
        api_key: sent as ``Authorization: Bearer ...`` when set, and only then.
        connect_timeout: seconds allowed to open a connection.
        stall_timeout: seconds without a byte after which a streamed answer is abandoned.
        max_connections: connections kept to the node.
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        api_key: str | None,
        connect_timeout: float,
        stall_timeout: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"node {name}: invalid base URL {base_url!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"node {name}: base URL {base_url!r} is not an http(s) URL")
        self.base_url = base_url
        self.name = name
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._api_key = api_key
        self._max_connections = max_connections
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._urls: dict[str, httpx.URL] = {}  # path -> absolute URL, parsed once
        # When a request was last sent to the node or a byte came from it (trio time; while
        # streaming, updated at most every STALL_SLACK of the stall timeout).
        self.heard = -math.inf

    def __repr__(self) -> str:
        return f"NodeConnection({self.name!r}, {self.base_url!r})"

    async def __aenter__(self) -> NodeConnection:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            # read=None: only streamed requests get a read (stall) timeout, set per request.
            # pool=None: the engine gates concurrency; waiting for a connection is its call.
            timeout=httpx.Timeout(
                connect=self.connect_timeout, read=None, write=self.stall_timeout, pool=None
            ),
            limits=limits,
            transport=self._transport,
            trust_env=False,  # nodes are addressed directly, never through proxies from env
            verify=_tls_context(),
        )
        await http.__aenter__()
        self._http = http
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.__aexit__(exc_type, exc, traceback)

    @contextlib.contextmanager
    def key_hidden(self) -> Iterator[None]:
        """Take the node's API key out of any error raised inside: a node (or a proxy in
        front of it) may quote the request's headers in an error body, and error messages
        end up in results, reports and logs."""
        try:
            yield
        except NodeError as exc:
            key = self._api_key
            if key:
                exc.args = tuple(
                    a.replace(key, KEY_PLACEHOLDER) if isinstance(a, str) else a for a in exc.args
                )
                exc.body = exc.body.replace(key, KEY_PLACEHOLDER)
            raise

    async def exchange(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        feed: Callable[[bytes], None] | None = None,
    ) -> Reply:
        """Send a request; return its status, body and ``Retry-After`` pause.

        With ``feed`` (a streamed answer) a 200 body goes to ``feed`` chunk by chunk and the
        returned body is empty, and every wait for bytes is bounded by ``stall_timeout``.
        Error bodies are always returned, cut at ``ERROR_BODY_LIMIT``.

        Raises:
            TransportError: no connection, or it broke.
            NodeTimeout: a streamed answer stalled for ``stall_timeout`` seconds.
            ProtocolError: the body could not be decoded.
        """
        if self._http is None:
            raise RuntimeError("NodeClient used outside its `async with` block")
        watch = feed is not None
        timeout = self._http.timeout
        if watch:
            timeout = httpx.Timeout(
                connect=self.connect_timeout,
                read=self.stall_timeout,
                write=self.stall_timeout,
                pool=None,
            )
        request = self._http.build_request(method, self._url(path), json=body, timeout=timeout)
        # One cancel scope watches the whole exchange; with ``feed`` its deadline moves
        # forward as bytes arrive, at most every STALL_SLACK of the stall timeout.
        slack = self.stall_timeout * STALL_SLACK
        with trio.CancelScope() as stall:
            try:
                moved = self._watch(stall, watch)
                response = await self._http.send(request, stream=True)
                try:
                    content = bytearray()
                    moved = self._watch(stall, watch)
                    async for chunk in response.aiter_bytes():
                        if watch:
                            now = trio.current_time()
                            if now - moved >= slack:
                                moved = self._watch(stall, watch, now)
                        if not chunk:
                            continue
                        if feed is not None and response.status_code == 200:
                            feed(chunk)
                            continue
                        content += chunk
                        if response.status_code != 200 and len(content) >= ERROR_BODY_LIMIT:
                            break
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise self._translate(exc) from exc
        if stall.cancelled_caught:
            raise NodeTimeout(f"stalled: no byte for {self.stall_timeout:g}s", node=self.name)
        retry_after = None
        if response.status_code in BUSY_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), now=time.time())
        return Reply(response.status_code, bytes(content), retry_after)

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL of ``path`` on the node (parsed once per path, not per request)."""
        url = self._urls.get(path)
        if url is None:
            assert self._http is not None
            url = self._urls[path] = self._http.base_url.join(path.lstrip("/"))
        return url

    def _watch(self, stall: trio.CancelScope, watch: bool, now: float | None = None) -> float:
        """Move the stall watch's deadline for a byte seen at ``now``; return ``now``."""
        if now is None:
            now = trio.current_time()
        stall.deadline = now + self.stall_timeout * (1 + STALL_SLACK) if watch else math.inf
        self.heard = now
        return now

    def _translate(self, exc: httpx.HTTPError) -> NodeError:
        """The runner's error for an httpx one."""
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return TransportError(
                f"could not connect within {self.connect_timeout:g}s", node=self.name
            )
        if isinstance(exc, httpx.ReadTimeout):
            return NodeTimeout(f"stalled: no byte for {self.stall_timeout:g}s", node=self.name)
        if isinstance(exc, httpx.TimeoutException):
            return NodeTimeout(f"timed out: {type(exc).__name__}", node=self.name)
        if isinstance(exc, httpx.ConnectError):
            return TransportError(f"cannot connect: {detail}", node=self.name)
        if isinstance(exc, httpx.DecodingError):
            return ProtocolError(f"undecodable body: {detail}", node=self.name)
        return TransportError(f"{type(exc).__name__}: {detail}", node=self.name)
