# -*- test-case-name: tests.test_hostile -*-
"""
A lean HTTP/1.1 server protocol on httptools, for the hot path.

twisted.web's HTTPChannel parses with Python line callbacks and builds a
full L{twisted.web.server.Request} per request: at ~10k req/s that is half
of our CPU.  This channel lets httptools (llhttp, in C) parse, and hands the
same L{Router} a small request object with just the C{IRequest} surface our
handlers use.  It keeps the semantics clients rely on: keep-alive and
HTTP/1.0, pipelining (answers in order, input paused when too many queue
up), chunked request bodies, C{Expect: 100-continue}, body-size and header
limits, idle timeouts, and a clean 400 for malformed input.  twisted.web's
channel stays available (``--http twisted``) and is used where httptools is
missing (PyPy).
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from mockoai.pipeline import errors
from mockoai.wire import failures, guard

if TYPE_CHECKING:
    from mockoai.interfaces import Transport

#: Requests parsed but not yet answered before we stop reading the socket.
MAX_PIPELINE = 16
_STATUS = {code: b"%d %s" % (code, reason) for code, reason in http.RESPONSES.items()}
_STATUS[431] = b"431 " + failures.reason(431)


class LeanRequest:
    """The slice of C{IRequest} that mockoai's handlers and producers use."""

    __slots__ = (
        "_disconnected",
        "_notify",
        "_response_headers",
        "channel",
        "chunked",
        "clientproto",
        "code",
        "content",
        "finished",
        "keep_alive",
        "key_label",
        "method",
        "outcome",
        "path",
        "raw_headers",
        "site",
        "started",
        "uri",
    )

    def __init__(
        self,
        channel: LeanChannel,
        method: bytes,
        uri: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        version: bytes,
        keep_alive: bool,
    ) -> None:
        self.channel = channel
        self.site = channel.site
        self.method = method
        self.uri = uri
        query = uri.find(b"?")
        self.path = uri if query < 0 else uri[:query]
        self.raw_headers = raw_headers
        self.content = io.BytesIO(body)
        self.clientproto = version
        self.keep_alive = keep_alive
        self.code = 200
        self._response_headers: dict[bytes, tuple[bytes, bytes]] = {}
        self.started = False
        self.chunked = False
        self.finished = False
        self._disconnected = False
        self._notify: list[Deferred[None]] | None = None
        self.key_label: str | None = None  # the API key's label (mockoai.pipeline.auth)
        self.outcome: Any = None  # what became of it (mockoai.pipeline.outcome.Outcome)

    # --- reading the request ---

    def getHeader(self, name: bytes | str) -> bytes | None:
        key = (name.encode() if isinstance(name, str) else name).lower()
        for header, value in self.raw_headers:
            if header.lower() == key:
                return value
        return None

    @property
    def requestHeaders(self) -> Headers:
        headers = Headers()
        for name, value in self.raw_headers:
            headers.addRawHeader(name, value)
        return headers

    def getClientAddress(self) -> IAddress:
        transport = self.channel.transport
        assert transport is not None
        return transport.getPeer()

    def isSecure(self) -> bool:
        return self.channel.secure

    # --- the response ---

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        raw = name.encode() if isinstance(name, str) else name
        self._response_headers[raw.lower()] = (
            raw,
            value.encode() if isinstance(value, str) else value,
        )

    def getResponseHeader(self, name: bytes) -> bytes | None:
        entry = self._response_headers.get(name.lower())
        return entry[1] if entry else None

    def _head(self) -> bytes:
        headers = self._response_headers
        # 204 (a CORS preflight's answer) has neither a length nor a body.
        if b"content-length" not in headers and self.method != b"HEAD" and self.code != 204:
            if self.clientproto == b"HTTP/1.1":
                self.chunked = True
                headers[b"transfer-encoding"] = (b"Transfer-Encoding", b"chunked")
            else:
                self.keep_alive = False
        if not self.keep_alive:
            headers[b"connection"] = (b"Connection", b"close")
        lines = [b"HTTP/1.1 ", _STATUS.get(self.code) or b"%d Unknown" % self.code, b"\r\n"]
        for name, value in headers.values():
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("write() after finish()")
        if self._disconnected:
            return
        send = self.channel.send
        if not self.started:
            self.started = True
            head = self._head()
            if self.method == b"HEAD" or not data:
                send(head)
            elif self.chunked:
                send(b"%s%x\r\n%s\r\n" % (head, len(data), data))
            else:
                send(head + data)
        elif data and self.method != b"HEAD":
            if self.chunked:
                send(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                send(data)

    def finish(self) -> None:
        if self._disconnected:
            raise RuntimeError("finish() after the connection was lost")
        if self.finished:
            return
        if not self.started:
            if b"content-length" not in self._response_headers and self.code != 204:
                self._response_headers[b"content-length"] = (b"Content-Length", b"0")
            self.write(b"")
        elif self.chunked:
            self.channel.send(b"0\r\n\r\n")
        self.finished = True
        notify, self._notify = self._notify, None
        for d in notify or ():
            d.callback(None)
        self.channel.request_done(self)

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.finished:
            d.callback(None)
        elif self._disconnected:
            d.errback(Failure(ConnectionError("connection lost")))
        else:
            if self._notify is None:
                self._notify = []
            self._notify.append(d)
        return d

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        transport = self.channel.transport
        assert transport is not None
        transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        transport = self.channel.transport
        if transport is not None:
            transport.unregisterProducer()

    def connection_lost(self, reason: Failure) -> None:
        self._disconnected = True
        notify, self._notify = self._notify, None
        for d in notify or ():
            d.errback(reason)


class LeanChannel(Protocol, TimeoutMixin):
    """One HTTP/1.1 connection, parsed by httptools."""

    # Set by the site's buildProtocol, as twisted.web's channels are.
    site: Any
    factory: Any
    transport: Transport | None  # type: ignore[assignment]
    callLater: Callable[..., Any]
    timeOut: float | None = None  # type: ignore[assignment]
    requestFactory: Any = None
    secure = False
    _socket: Any = None

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[LeanRequest] = deque()
        self._current: LeanRequest | None = None
        self._pumping = False
        self._paused_reading = False
        self._refused = False
        self._closing = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        # Hostile input (mockoai.wire.guard): the head being read, and its bytes so far.
        self._in_head = False
        self._head_seen = 0
        self._idle_timeout: float | None = None
        self._abort_call: Any = None

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    @property
    def requests(self) -> list[LeanRequest]:
        return ([self._current] if self._current else []) + list(self._queue)

    def connectionMade(self) -> None:
        transport = self.transport
        set_nodelay = getattr(transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):
                set_nodelay(True)
        self.secure = getattr(transport, "TLS", False) or hasattr(transport, "getPeerCertificate")
        # Plain TCP only: TLS and test transports keep their own write path.
        self._socket = transport.socket if type(transport) is tcp.Server else None
        self.site.channels.add(self)
        # TimeoutMixin.setTimeout(None) forgets timeOut: keep the idle timeout.
        self._idle_timeout = self.timeOut
        self._limits = self.site.http_limits
        self.setTimeout(self.timeOut)
        self.site.header_deadlines.start(self)

    def send(self, data: bytes) -> None:
        """
        Write ``data`` now: straight to the socket when nothing is queued
        before it, else through the transport's buffer.

        C{transport.write} only buffers, then costs an epoll registration,
        a reactor pass and a deregistration per write; a paced stream makes
        one small write per event, so sending at once halves its CPU.
        """
        sock = self._socket
        if sock is not None:
            transport = self.transport
            if (
                not transport._tempDataLen  # type: ignore[union-attr]
                and transport.offset == len(transport.dataBuffer)  # type: ignore[union-attr]
                and not transport.disconnecting  # type: ignore[union-attr]
                and not transport._aborting  # type: ignore[union-attr]
            ):
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent = 0  # the transport's own write path reports the loss
                if sent == len(data):
                    return
                data = data[sent:]
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._refused or self._closing:
            return
        self.resetTimeout()
        in_head = self._in_head
        try:
            self._parser.feed_data(data)
            if self._in_head:
                # A head split over reads: bound what httptools buffers of it,
                # and start its slow-header deadline.
                self._head_seen = self._head_seen + len(data) if in_head else len(data)
                if self._head_seen > self._limits.head_bytes:
                    raise _RefusalError(guard.headers_too_large(self._limits.max_header_bytes))
                self.site.header_deadlines.start(self)
        except _RefusalError as e:
            self.refuse(e.error)
        except httptools.HttpParserUpgrade:
            self.refuse(errors.APIError(400, "Protocol upgrades are not supported."))
        except httptools.HttpParserError as e:
            # httptools wraps what our callbacks raise; a refusal says why.
            cause = e.__context__
            if isinstance(cause, _RefusalError):
                self.refuse(cause.error)
            else:
                self.refuse(guard.malformed())
        self._pump()

    def timeoutConnection(self) -> None:
        # A clean close (FIN, not RST: the client may still be reading the
        # last answer), forced after a second if unsent data holds it open.
        if self.transport is not None:
            self.transport.loseConnection()
            self._abort_call = self.callLater(1.0, self.transport.abortConnection)

    def header_timed_out(self) -> None:
        """The slow-header deadline passed: 408 if a request began, then close."""
        if self.busy:
            # A pipelined head trickling in behind an answer in progress:
            # judge it once that answer is out.
            self.site.header_deadlines.start(self)
        elif self._in_head:
            self.refuse(guard.header_timeout(self._limits.header_timeout))
        elif self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self.site.header_deadlines.lost(self)
        self.site.channels.discard(self)
        if getattr(self, "counted", False):
            self.site.connections.close()
        current, queued = self._current, list(self._queue)
        self._current = None
        self._queue.clear()
        if current is not None:
            current.connection_lost(reason)
            self.site.request_lost(current)
        for request in queued:
            request.connection_lost(reason)

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_seen = 0
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_length:
            raise _RefusalError(guard.uri_too_long(self._limits.max_url_length))

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self._limits
        self._header_bytes += len(name) + len(value)
        if len(self._headers) >= limits.max_headers:
            raise _RefusalError(guard.too_many_headers(limits.max_headers))
        if self._header_bytes > limits.max_header_bytes:
            raise _RefusalError(guard.headers_too_large(limits.max_header_bytes))
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.site.header_deadlines.done(self)
        limit = self.site.max_body_size
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise _RefusalError(errors.body_too_large(limit))
            elif (
                lowered == b"expect"
                and value.lower() == b"100-continue"
                and self._parser.get_http_version() == "1.1"
            ):
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.site.max_body_size:
            raise _RefusalError(errors.body_too_large(self.site.max_body_size))
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        request = LeanRequest(
            self,
            parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body),
            b"HTTP/" + parser.get_http_version().encode(),
            parser.should_keep_alive(),
        )
        self._body = []
        self._queue.append(request)
        if len(self._queue) > MAX_PIPELINE and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    # --- answering, in order ---

    def _pump(self) -> None:
        """Answer queued requests one at a time (synchronous answers loop here)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._current is None and self._queue and not self._closing:
                request = self._current = self._queue.popleft()
                self.setTimeout(None)
                self.site.handle(request)
            if self._paused_reading and len(self._queue) <= MAX_PIPELINE // 2:
                self._paused_reading = False
                assert self.transport is not None
                self.transport.resumeProducing()  # type: ignore[attr-defined]
        finally:
            self._pumping = False

    def request_done(self, request: LeanRequest) -> None:
        if request is not self._current:
            return
        self._current = None
        self.site.request_finished(request)
        if not request.keep_alive:
            self._closing = True
            self._queue.clear()
            assert self.transport is not None
            self.transport.loseConnection()
            return
        if not self._queue:
            self.setTimeout(self._idle_timeout)
        self._pump()

    def refuse(self, error: errors.APIError) -> None:
        """
        Answer ``error`` (after any answers in progress are lost) and close,
        in the envelope of the request-target read so far.
        """
        if self._refused:
            return
        self._refused = True
        site = self.site
        envelope = site.envelopes.for_path(self._url)
        assert self.transport is not None
        self.transport.write(failures.refusal(error, site.ids.request(), envelope))
        self.transport.loseConnection()


class _RefusalError(Exception):
    """Raised from a parser callback to stop parsing and answer ``error``."""

    def __init__(self, error: errors.APIError) -> None:
        super().__init__(error.message)
        self.error = error
