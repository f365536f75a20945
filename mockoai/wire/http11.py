# -*- test-case-name: tests.test_hostile -*-
"""
A lean HTTP/1.1 server protocol, for the hot path.

twisted.web's HTTPChannel parses with Python line callbacks and builds a
full L{twisted.web.server.Request} per request: at ~10k req/s that is half
of our CPU.  This channel lets httptools (llhttp, in C) parse -- or, where
httptools cannot be installed (PyPy), L{mockoai.wire.h1parser}, which has
the same interface and accepts the same input -- and hands the same
L{Router} a small request object with just the C{IRequest} surface our
handlers use.  It keeps the semantics clients and proxies rely on (RFC
9112): keep-alive (HTTP/1.0's only when asked for, and then said so), one
answer per request and in order, also when a refusal follows valid requests
in the same read (input paused when too many queue up), chunked request
bodies, C{Expect: 100-continue} (never before a refusal), ignored upgrade
requests (``Upgrade: h2c`` from curl), body-size and header limits, a 400
for HTTP/1.1 without C{Host}, for HTTP/0.9 and for malformed input, and
requests judged from their heads before their bodies are read (see
L{mockoai.wire.site}).  twisted.web's channel stays available (``--http
twisted``); ``--http lean-python`` runs this channel on the pure-Python
parser under CPython too (L{LeanPythonChannel}).
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from mockoai.pipeline import errors
from mockoai.wire import failures, guard, h1parser
from mockoai.wire.heap import LARGE_BODY
from mockoai.wire.poll import CLOSED, SendBatch

if TYPE_CHECKING:
    from mockoai.interfaces import Transport

httptools: Any
try:
    import httptools
except ImportError:  # PyPy: the pure-Python parser serves
    httptools = None

#: What either parser raises: malformed input, and an upgrade's end of head.
_PARSE_ERRORS: tuple[type[Exception], ...] = (h1parser.HttpParserError,)
_UPGRADES: tuple[type[Exception], ...] = (h1parser.HttpParserUpgrade,)
if httptools is not None:
    _PARSE_ERRORS += (httptools.HttpParserError,)
    _UPGRADES += (httptools.HttpParserUpgrade,)

#: Requests parsed but not yet answered before we stop reading the socket.
MAX_PIPELINE = 16
#: The versions a request may use, as httptools names them (interned bytes).
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
_HTTP10 = _VERSIONS["1.0"]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: A request's body until it is read whole (never read: a handler runs after).
_NO_BODY = io.BytesIO()
#: The parser of a connection that is gone (never fed).
_NO_PARSER = h1parser.HttpRequestParser(object())
#: Each status line, with the Date field every answer carries next.
_STATUS = {
    code: b"HTTP/1.1 %d %s\r\nDate: " % (code, failures.reason(code)) for code in http.RESPONSES
}
_STATUS[431] = b"HTTP/1.1 431 %s\r\nDate: " % failures.reason(431)


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
        "refusal",
        "screened",
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
        self.content: io.BytesIO = _NO_BODY  # the body, once read whole
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
        self.screened = False  # its key was checked from its head (MockSite.screen)
        self.refusal: errors.APIError | None = None  # its answer, decided from its head
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
        elif self.clientproto is _HTTP10:
            # HTTP/1.0 closes unless both sides say keep-alive (RFC 9112 9.3).
            headers[b"connection"] = (b"Connection", b"keep-alive")
        status = _STATUS.get(self.code) or b"HTTP/1.1 %d Unknown\r\nDate: " % self.code
        fields = b"".join([b"%s: %s\r\n" % field for field in headers.values()])
        return b"%s%s\r\n%s\r\n" % (status, self.site.date(), fields)

    def respond(self, body: bytes) -> None:
        """Answer with ``body`` whole: the head and the body in one send, and finish."""
        if self.started:
            raise RuntimeError("respond() after the answer began")
        if self._disconnected:
            return
        self._response_headers[b"content-length"] = (b"Content-Length", b"%d" % len(body))
        self.started = True
        head = self._head()
        self.channel.send(head if self.method == b"HEAD" else head + body)
        self._ended()

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
        self._ended()

    def _ended(self) -> None:
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


class LeanChannel(Protocol):
    """One HTTP/1.1 connection, parsed by httptools where installed."""

    #: Makes the parser, given the channel whose callbacks it calls.
    parser_type: Any = (
        h1parser.HttpRequestParser if httptools is None else httptools.HttpRequestParser
    )

    # Set by the site's buildProtocol, as twisted.web's channels are.
    site: Any
    factory: Any
    transport: Transport | None  # type: ignore[assignment]
    callLater: Callable[..., Any]
    timeOut: float | None = None
    #: When this became idle or last read, or ``None`` while it is not idle
    #: (a request in progress, a body being read): L{guard.IdleSweep}.
    idle_since: float | None = None
    requestFactory: Any = None
    secure = False
    _socket: Any = None
    #: The site's L{SendBatch}, and this connection's writes it holds (or ``None``).
    _batch: SendBatch = CLOSED
    _held: list[bytes] | None = None

    def __init__(self) -> None:
        self._parser = self.parser_type(self)
        self._queue: deque[LeanRequest] = deque()
        self._current: LeanRequest | None = None
        self._pumping = False
        self._paused_reading = False
        #: Input is over: nothing more is parsed (a refusal, or a tunnel's bytes).
        self._refused = False
        #: A refusal owed once the answers before it are out: (error, request-target).
        self._refusal: tuple[errors.APIError, bytes] | None = None
        #: A 100 Continue owed once the answers before it are out.
        self._continue = False
        self._closing = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        #: The request whose head is in and whose body is being read.
        self._request: LeanRequest | None = None
        #: An upgrade's (or CONNECT's) head: method, target, fields, version.
        self._upgrading: tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes] | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        # Hostile input (mockoai.wire.guard): the head being read, and its bytes so far;
        # a body split over reads, on the body deadline's watch.
        self._in_head = False
        self._head_seen = 0
        self._in_body = False
        self._abort_call: Any = None
        #: Answers begun on this connection, and when it opened (--keepalive-*).
        self._served = 0
        self._opened = 0.0
        self._max_served = 0
        self._max_age = 0.0

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
        site = self.site
        self._batch = site.batch
        site.channels.add(self)
        self._limits = site.http_limits
        self._max_served = site.keepalive_requests
        self._max_age = site.keepalive_time
        if self._max_age:
            self._opened = site.clock.seconds()
        self._now = site.clock.seconds
        site.idle.add(self)
        site.header_deadlines.start(self)

    def send(self, data: bytes) -> None:
        """
        Write ``data``: held until the poll step that produced it ends, when
        one is open (L{mockoai.wire.poll}), else at once.
        """
        held = self._held
        if held is not None:
            held.append(data)
        elif self._batch.open and self._socket is not None:
            self._held = [data]
            self._batch.hold(self)
        else:
            self._send_now(data)

    def flush(self) -> None:
        """Send what a poll step held (before anything that closes: they go out first)."""
        held, self._held = self._held, None
        if held:
            self._send_now(held[0] if len(held) == 1 else b"".join(held))

    def _send_now(self, data: bytes) -> None:
        """
        Straight to the socket when nothing is queued before it, else
        through the transport's buffer.

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
            # Answered, or closing: what the client still sends is dropped
            # (and its read buffers counted, to give their memory back).
            self.site.large_bodies.freed(len(data))
            return
        self.idle_since = self._now()
        more: bytes | None = data
        while more is not None:
            more = self._feed(more)
        if self._request is not None and not self._in_body and not self._refused:
            # A body split over reads: it must arrive in time (and not just
            # keep the idle timer from firing).
            self._in_body = True
            deadlines = self.site.body_deadlines
            if deadlines.on:
                self.idle_since = None
                deadlines.start(self)
        self._pump()

    def _feed(self, data: bytes) -> bytes | None:
        """Parse ``data``; what is left to parse after an ignored upgrade, else ``None``."""
        in_head = self._in_head
        parser = self._parser
        try:
            parser.feed_data(data)
            if self._in_head:
                # A head split over reads: bound what the parser buffers of it,
                # and start its slow-header deadline.
                self._head_seen = self._head_seen + len(data) if in_head else len(data)
                if self._head_seen > self._limits.head_bytes:
                    raise _RefusalError(guard.headers_too_large(self._limits.max_header_bytes))
                if self._url and data[-1:] == b"\n" and parser.get_http_version() == "0.0":
                    # A request line that ended without a version: HTTP/0.9,
                    # whose client waits for an answer without a head.
                    raise _RefusalError(guard.malformed())
                self.site.header_deadlines.start(self)
        except _RefusalError as e:
            self.refuse(e.error)
        except _UPGRADES as e:
            return self._upgrade(data, e)
        except _PARSE_ERRORS as e:
            # The parser wraps what our callbacks raise; a refusal says why.
            # (No local may keep the cause: its traceback holds this frame.)
            if isinstance(e.__context__, _RefusalError):
                self.refuse(e.__context__.error)
            elif not isinstance(e.__context__, _ScreenedError):
                self.refuse(guard.malformed())
        return None

    def _upgrade(self, data: bytes, upgrade: Exception) -> bytes | None:
        """
        An upgrade's head (``Upgrade`` with ``Connection: upgrade``) or a
        CONNECT's is in, and llhttp has stopped at its end.  An upgrade is
        ignored, as RFC 9110 (7.8) lets a server do and twisted.web does: a
        new parser goes on from the same head without its ``Upgrade`` field,
        so the request (with any body: curl sends ``Upgrade: h2c`` on POSTs)
        is read and answered as any other, once.  A CONNECT is answered (no
        route takes it) and the connection closed: its bytes are a tunnel's.
        """
        upgrading, self._upgrading = self._upgrading, None
        if upgrading is None:
            self.refuse(guard.malformed())
            return None
        method, url, headers, version = upgrading
        if method == b"CONNECT":
            request = LeanRequest(self, method, url, headers, version, False)
            self._queue.append(request)
            self._stop()
            return None
        offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
        head = [b"%s %s %s\r\n" % (method, url, version)]
        head += [b"%s: %s\r\n" % field for field in headers if field[0].lower() != b"upgrade"]
        head.append(b"\r\n")
        self._parser = self.parser_type(self)
        return b"".join(head) + data[offset:]

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

    def body_received(self) -> int:
        return self._body_size

    def body_timed_out(self, error: errors.APIError) -> None:
        """The body deadline passed: 408 (after any answers before it), then close."""
        self._in_body = False
        if self._paused_reading and not self._refused:
            # Not read because too many answers queue before it: not the client's fault.
            self._in_body = True
            self.site.body_deadlines.start(self)
            return
        self.refuse(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The parser holds this channel's bound methods: a cycle that only the
        # cyclic GC would free (with its thresholds raised, after thousands of
        # connections: a flood of 11,000 kept ~15 MB), unless broken here.
        self._parser = _NO_PARSER
        self._held = None  # (the poll step's batch skips it)
        self.idle_since = None
        self.site.idle.discard(self)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        site = self.site
        site.header_deadlines.lost(self)
        if self._in_body:
            self._in_body = False
            site.body_deadlines.done(self)
        if self._request is not None and self._body_size >= LARGE_BODY:
            site.large_bodies.freed(self._body_size)  # a large body, abandoned
        self._request = None
        site.channels.discard(self)
        if getattr(self, "counted", False):
            site.connections.close()
        current, queued = self._current, list(self._queue)
        self._current = None
        self._queue.clear()
        if current is not None:
            current.connection_lost(reason)
            site.request_lost(current)
        for request in queued:
            request.connection_lost(reason)

    # --- the parser's callbacks ---

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_seen = 0
        self._url = b""
        self._headers = []
        self._header_bytes = 0
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
        """
        The head is in: refuse what the head alone decides (HTTP/0.9, no
        ``Host``, a body over the limit, no key, no route: L{MockSite.screen})
        before a byte of the body is read, and only then say 100 Continue.
        """
        self._in_head = False
        site = self.site
        site.header_deadlines.done(self)
        parser = self._parser
        length = 0
        chunked = expect = upgrade = host = False
        for name, value in self._headers:
            kind = _FIELDS.get(name.lower())
            if kind is None:
                continue
            if kind == _LENGTH:
                length = int(value) if value.isdigit() else 0
            elif kind == _HOST:
                host = True
            elif kind == _CHUNKED:
                chunked = True
            elif kind == _EXPECT:
                expect = value.lower() == b"100-continue"
            else:
                upgrade = True
        method = parser.get_method()
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise _RefusalError(guard.malformed())  # HTTP/0.9, HTTP/2.0 on HTTP/1.1's port
        if (upgrade or method == b"CONNECT") and parser.should_upgrade():
            self._upgrading = (method, self._url, self._headers, version)
            return
        if not host and version is not _HTTP10:
            raise _RefusalError(guard.missing_host())
        request = self._request = LeanRequest(
            self, method, self._url, self._headers, version, parser.should_keep_alive()
        )
        if length or chunked:
            limit = site.max_body_size
            if length > limit:
                raise _RefusalError(errors.body_too_large(limit))
            error = site.screen(request)
            if error is not None:
                # Answered in its turn and closed; its body is never read.
                request.refusal = error
                request.keep_alive = False
                self._queue.append(request)
                self._stop()
                raise _ScreenedError
            if expect and version is not _HTTP10:
                if self.busy:
                    self._continue = True  # not in the middle of an earlier answer
                else:
                    self.send(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.site.max_body_size:
            raise _RefusalError(errors.body_too_large(self.site.max_body_size))
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        if request is None:
            return  # an upgrade's head: see _upgrade
        self._request = None
        self._continue = False
        if self._in_body:
            self._in_body = False
            self.site.body_deadlines.done(self)
        body = self._body
        request.content = io.BytesIO(b"".join(body))
        body.clear()
        if self._body_size >= LARGE_BODY:
            self.site.large_bodies.freed(self._body_size)  # once the request lets go of it
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
                self.idle_since = None
                if request.refusal is not None:
                    self.site.refuse_request(request, request.refusal)
                    continue
                self._served += 1
                if self._served == self._max_served or (
                    self._max_age and self.site.clock.seconds() - self._opened >= self._max_age
                ):
                    # Its last answer here: the client reconnects (--keepalive-*).
                    request.keep_alive = False
                self.site.handle(request)
            if (
                self._paused_reading
                and len(self._queue) <= MAX_PIPELINE // 2
                and not self._refused
                and not self._closing
            ):
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
            # Input may be left unread: a refused body, pipelined requests.
            unread = self._refused or self._queue or self._in_head or self._request
            self._closing = True
            self._queue.clear()
            if unread:
                self._close_unread()
            else:
                assert self.transport is not None
                self.flush()
                self.transport.loseConnection()
            return
        if not self._queue:
            if self._refused:
                self._answer_refusal()
                return
            self.idle_since = self._now()
            if self._continue:
                self._continue = False
                self.send(_CONTINUE)
        self._pump()

    def refuse(self, error: errors.APIError) -> None:
        """
        Answer ``error`` and close, in the envelope of the request-target read
        so far: at once, or after the answers to the requests before it (one
        answer per request, in order).  Nothing more is read.
        """
        if self._refused or self._closing:
            return
        self._refusal = (error, self._url)
        self._stop()
        if not self.busy:
            self._answer_refusal()

    def _stop(self) -> None:
        """Parse nothing more; the answers due still go out, in order."""
        self._refused = True
        site = self.site
        site.header_deadlines.lost(self)  # (an abandoned head, if one was in progress)
        if self._in_body:
            self._in_body = False
            site.body_deadlines.done(self)
        if self._request is not None and self._body_size >= LARGE_BODY:
            site.large_bodies.freed(self._body_size)
        self._request = None
        self._body.clear()
        if self.busy and not self._paused_reading and self.transport is not None:
            # Until its turn comes, the client's further bytes wait in its socket.
            self._paused_reading = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _answer_refusal(self) -> None:
        refusal, self._refusal = self._refusal, None
        if refusal is None or self.transport is None:
            return
        error, target = refusal
        site = self.site
        envelope = site.envelopes.for_path(target)
        self.send(failures.refusal(error, site.ids.request(), envelope))
        self._close_unread()

    def _close_unread(self) -> None:
        """Close while the client may still be sending (see L{guard.close_unread})."""
        self.flush()
        self._closing = True
        self._paused_reading = False
        self.idle_since = None
        self._abort_call = guard.close_unread(self.transport, self.site.clock)


class LeanPythonChannel(LeanChannel):
    """The lean channel on the pure-Python parser, also where httptools is installed."""

    parser_type = h1parser.HttpRequestParser


class _RefusalError(Exception):
    """Raised from a parser callback to stop parsing and answer ``error``."""

    def __init__(self, error: errors.APIError) -> None:
        super().__init__(error.message)
        self.error = error


class _ScreenedError(Exception):
    """Raised from a parser callback once a head's own answer is queued: parse no more."""


#: The header fields the channel reads itself, lowercased.
_LENGTH, _HOST, _CHUNKED, _EXPECT, _UPGRADE = range(5)
_FIELDS = {
    b"content-length": _LENGTH,
    b"host": _HOST,
    b"transfer-encoding": _CHUNKED,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
}
