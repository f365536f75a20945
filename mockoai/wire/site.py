# -*- test-case-name: tests.test_hostile,tests.test_envelopes -*-
"""
The HTTP/1.1 layer: twisted.web's channel and request, with what a mock
inference server needs and nothing it does not.

- POST form parsing is off: by default twisted.web parses every POST's
  Content-Type with the ``email`` package, which halves its throughput.
- Requests skip twisted.web's resource traversal and go straight to the
  L{Router} over the Klein route table.
- Every accepted TCP connection gets TCP_NODELAY (small SSE writes must not
  sit in Nagle's buffer), and every response an ``x-request-id``.
- A request with a body is judged from its head before the body is read
  (L{MockSite.screen}): over the size limit (413), without a valid key
  (401), to no route or the wrong method (404, 405), or during a drain
  (503), it is answered and the connection closed without buffering a byte
  of it; a body must then arrive in time (L{mockoai.wire.guard.BodyDeadlines}).
- The access log is off unless asked for (it costs ~20%).
- A keep-alive connection is closed after ``--keepalive-requests`` answers
  or ``--keepalive-time`` seconds, so clients reconnect (and ``--workers``
  share them again after a restart).
- The site counts requests in flight, so shutdown can drain them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web import http, server
from twisted.web.resource import IResource

from mockoai.ops.config import HttpLimits
from mockoai.ops.observe import Observer
from mockoai.pipeline import errors
from mockoai.pipeline.auth import Authenticator
from mockoai.pipeline.errors import Envelopes, write_error
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.limits import ConnectionCap, RefusedConnection
from mockoai.pipeline.outcome import note_error
from mockoai.wire import failures, guard
from mockoai.wire.cors import Cors
from mockoai.wire.dispatch import Router
from mockoai.wire.guard import BodyDeadlines, HeaderDeadlines, IdleSweep
from mockoai.wire.heap import LARGE_BODY, LargeBodies
from mockoai.wire.poll import CLOSED, SendBatch

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Transport

_HEALTH = b"/health"


class MockRequest(server.Request):
    """A request dispatched by the site's L{Router} and counted while active."""

    _counted = False
    _body_size = 0
    #: What became of it (L{mockoai.pipeline.outcome.Outcome}), for the finish hook.
    outcome = None
    #: The label of the API key it presented (L{mockoai.pipeline.auth}), when keys are on.
    key_label: str | None = None
    #: Its key was checked from its head (L{MockSite.screen}).
    screened = False
    channel: MockChannel
    site: MockSite

    def process(self) -> None:
        channel = self.channel
        if channel._refused:
            # The rest of a chunked body arrived with its end after the 413
            # went out: the request was never read whole and must not run.
            return
        site = self.site = channel.site
        channel.served += 1
        if channel.served == site.keepalive_requests or (
            site.keepalive_time and site.clock.seconds() - channel.opened >= site.keepalive_time
        ):
            # Its last answer on this connection: the client reconnects.
            channel.persistent = False
            self.setHeader(b"Connection", b"close")
        self._counted = True
        self.setHeader(b"Date", site.date())  # (the lean stack writes its own)
        site.handle(self)

    def handleContentChunk(self, data: bytes) -> None:
        # Chunked bodies have no Content-Length to check up front.
        self._body_size += len(data)
        if self._body_size > self.channel.site.max_body_size:
            self.channel.refuse(errors.body_too_large(self.channel.site.max_body_size))
            return
        server.Request.handleContentChunk(self, data)

    def respond(self, body: bytes) -> None:
        """Answer with ``body`` whole, and finish (the lean stack's one call)."""
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def finish(self) -> None:
        server.Request.finish(self)
        self._release()

    def connectionLost(self, reason: object) -> None:
        site = self.channel.site if self.channel is not None else None
        server.Request.connectionLost(self, reason)
        if site is not None:
            self._release(site, lost=True)

    def _release(self, site: MockSite | None = None, lost: bool = False) -> None:
        if self._counted:
            self._counted = False
            site = site or self.site
            (site.request_lost if lost else site.request_finished)(self)
            if self._body_size >= LARGE_BODY:
                site.large_bodies.freed(self._body_size)


class MockChannel(http.HTTPChannel):
    """HTTP/1.1 channel with TCP_NODELAY, and requests judged from their heads."""

    site: MockSite
    transport: Transport  # type: ignore[assignment]
    _refused = False
    #: Requests answered on this connection, and when it opened (--keepalive-*).
    served = 0
    opened = 0.0
    _linger: Any = None
    #: While a body is watched by the body deadline: the idle timeout it suspends.
    _body_idle: float | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):
                set_nodelay(True)
        self.site.channels.add(self)
        # Hostile input (mockoai.wire.guard): twisted.web's own limits become
        # backstops behind ours, which answer 414/431 envelopes.
        limits = self._limits = self.site.http_limits
        self.maxHeaders = limits.max_headers
        self.MAX_LENGTH = max(limits.max_url_length, limits.max_header_bytes) + 1024
        self.totalHeadersSize = limits.head_bytes + self.MAX_LENGTH
        self._head_bytes = 0
        if self.site.keepalive_time:
            self.opened = self.site.clock.seconds()
        self.site.header_deadlines.start(self)

    def connectionLost(self, reason: object) -> None:  # type: ignore[override]
        self.site.header_deadlines.lost(self)
        self.site.body_deadlines.done(self)
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.site.channels.discard(self)
        if getattr(self, "counted", False):
            self.site.connections.close()
        super().connectionLost(reason)
        # A body's decoder holds a bound method of this channel: a cycle only
        # the cyclic GC would free, left behind by every refusal mid-body.
        self._transferDecoder = None

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # Answered and closing: what the client still sends is dropped
            # (and its read buffers counted, to give their memory back).
            self.site.large_bodies.freed(len(data))
            return
        super().dataReceived(data)
        if self._in_head():
            self.site.header_deadlines.start(self)
        elif (
            not self.line_mode
            and not self._handlingRequest
            and not self._refused
            and self._body_idle is None
            and self.site.body_deadlines.on
        ):
            # A body split over reads: it must arrive in time (and not just
            # keep the idle timer from firing).
            self._body_idle = self.setTimeout(None) or 0.0
            self.site.body_deadlines.start(self)

    def allContentReceived(self) -> None:
        if self._refused:
            return  # refused from its head (and answered): never run
        if self._body_idle is not None:
            self.site.body_deadlines.done(self)
            self.setTimeout(self._body_idle or None)
            self._body_idle = None
        super().allContentReceived()

    def body_received(self) -> int:
        return self.requests[-1]._body_size if self.requests else 0

    def body_timed_out(self, error: errors.APIError) -> None:
        """The body deadline passed: 408, then close."""
        self.refuse(error)

    def _in_head(self) -> bool | int:
        """Whether part of a request head, and not all of it, has arrived."""
        return (
            self.line_mode
            and not self._refused
            and not self._handlingRequest
            and (bool(self._buffer) or not self._HTTPChannel__first_line)  # type: ignore[attr-defined]
        )

    def header_timed_out(self) -> None:
        """The slow-header deadline passed: 408 if a request began, then close."""
        if self._handlingRequest:
            self.site.header_deadlines.start(self)
        elif self._in_head():
            self.refuse(guard.header_timeout(self._limits.header_timeout))
        elif self.transport is not None:
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self.refuse(guard.uri_too_long(self._limits.max_url_length), _target(line))
        else:
            self.refuse(guard.headers_too_large(self._limits.max_header_bytes))

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's bare "400 Bad Request" for whatever it rejects.
        if self._receivedHeaderCount > self.maxHeaders:
            self.refuse(guard.too_many_headers(self.maxHeaders))
        else:
            self.refuse(guard.malformed())

    def allHeadersReceived(self) -> None:
        site = self.site
        site.header_deadlines.done(self)
        limit = site.max_body_size
        if self.length is not None and self.length > limit:
            self.refuse(errors.body_too_large(limit))
            return
        request = self.requests[-1]
        if self._version == b"HTTP/1.1" and not request.requestHeaders.hasHeader(b"host"):
            self.refuse(guard.missing_host())
            return
        if self.length != 0:
            # A body is coming: judge the request by its head first.
            target: bytes = self._path  # type: ignore[assignment]
            request.method = self._command
            request.uri = target
            request.path = target.split(b"?", 1)[0]
            error = site.screen(request)
            if error is not None:
                self.refuse(error, request=request)
                return
        super().allHeadersReceived()

    def refuse(
        self, error: errors.APIError, path: bytes | None = None, request: Any = None
    ) -> None:
        """
        Answer with ``error`` without reading further, then close; in the
        envelope of ``path``, else of the request line read so far (twisted.web
        forgets it once a request is whole).  A ``request`` whose head was
        judged is answered with its CORS headers, and counted as answered.
        """
        if self._refused:
            return
        self._refused = True
        site = self.site
        site.body_deadlines.done(self)
        path = path or getattr(self, "_path", None)
        envelope = site.envelopes.for_path(path)
        request_id = site.ids.request()
        headers: list[tuple[bytes, bytes]] = []
        if request is not None:
            if site.cors is not None:
                site.cors.apply(request)  # (never a preflight: those are not judged early)
                headers = [
                    (name, value)
                    for name, values in request.responseHeaders.getAllRawHeaders()
                    for value in values
                ]
            request.setResponseCode(error.status)
            request.setHeader(b"x-request-id", request_id)
            site.refused(request)
        self.transport.write(failures.refusal(error, request_id, envelope, headers))
        # The client may still be sending what will never be read.
        self._linger = guard.close_unread(self.transport, site.clock)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        limits = self._limits
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self._head_bytes = 0
            parts = line.split(b" ", 2)
            if len(parts) > 1 and len(parts[1]) > limits.max_url_length:
                self.refuse(guard.uri_too_long(limits.max_url_length), parts[1])
                return
        elif line:
            # Names and values, as the lean stack counts them (not ": ").
            self._head_bytes += len(line) - 2
            if self._head_bytes > limits.max_header_bytes:
                self.refuse(guard.headers_too_large(limits.max_header_bytes))
                return
        super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    @property
    def busy(self) -> bool:
        return bool(self.requests)


def _target(line: bytes) -> bytes | None:
    """The request-target of a (partial) request line."""
    parts = line.split(b" ", 2)
    return parts[1] if len(parts) > 1 else None


class MockSite(server.Site):
    """The site: routes through a L{Router}, counts requests, can drain."""

    protocol = MockChannel  # type: ignore[assignment]
    #: API keys and CORS (L{mockoai.pipeline.auth}, L{mockoai.wire.cors}); None = off, for free.
    auth: Authenticator | None = None
    cors: Cors | None = None
    #: Answers a keep-alive connection gives (0: no limit) and seconds it may
    #: live (0: no limit) before its answer says ``Connection: close``.
    keepalive_requests = 0
    keepalive_time = 0.0
    #: Where the lean channels hold the answers of one poll step (L{mockoai.wire.poll}).
    batch: SendBatch = CLOSED

    def __init__(
        self,
        resource: IResource,
        router: Router,
        clock: Clock,
        ids: IdMaker,
        max_body_size: int,
        idle_timeout: float,
        access_log: bool = False,
        http: str = "twisted",
        max_connections: int = 0,
        http_limits: HttpLimits | None = None,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=MockRequest,
            timeout=idle_timeout or None,
            reactor=clock,
            parsePOSTFormSubmission=False,
        )
        if http == "lean-python":
            from mockoai.wire.http11 import LeanPythonChannel

            self.protocol = LeanPythonChannel  # type: ignore[assignment]
        elif http != "twisted":  # lean, auto
            from mockoai.wire.http11 import LeanChannel

            self.protocol = LeanChannel  # type: ignore[assignment]
        self.router = router
        self.clock = clock
        self.ids = ids
        self.max_body_size = max_body_size
        limits = self.http_limits = http_limits or HttpLimits()
        self.header_deadlines = HeaderDeadlines(clock, limits.header_timeout)
        self.body_deadlines = BodyDeadlines(clock, limits.body_timeout, limits.body_min_rate)
        #: The lean stack's idle timeout (twisted.web's channel keeps its own timer).
        self.idle = IdleSweep(clock, idle_timeout)
        self.large_bodies = LargeBodies(clock)
        self.access_log = access_log
        self.channels: set[MockChannel] = set()
        self.connections = ConnectionCap(guard.connection_cap(max_connections))
        self.active = 0
        self.draining = False
        #: Called once as each request ends (L{mockoai.ops.observe.Observer}).
        self.observer: Observer | None = None
        self._on_idle: list[Callable[[], None]] = []
        self._date_second = -1
        self._date = b""

    @property
    def envelopes(self) -> Envelopes:
        """
        The error envelope of each API, by path prefix, for every refusal and
        error the wire writes (the service sets it; OpenAI's by default).  It
        is the router's table: one place to set, nothing to look up per request.
        """
        return self.router.envelopes

    @envelopes.setter
    def envelopes(self, envelopes: Envelopes) -> None:
        self.router.envelopes = envelopes

    def buildProtocol(self, addr: Any) -> Any:
        """A channel, or -- over the connection cap -- a clean 503 and close."""
        if not self.connections.try_open():
            # Before any request: no path, so the default envelope.
            response = failures.refusal(
                self.connections.error, self.ids.request(), self.envelopes.default
            )
            return RefusedConnection(response, self.clock)
        channel = super().buildProtocol(addr)
        channel.counted = True
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        """
        ALPN: the site's channels speak HTTP/1.1 only (twisted.web's Site
        would offer h2 too); TLS listeners get h2 through L{mockoai.wire.http2}.
        """
        return [b"http/1.1"]

    def date(self) -> bytes:
        """The Date header, formatted once a second rather than per request."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = http.datetimeToString(now)
        return self._date

    def log(self, request: http.Request) -> None:
        if self.access_log:
            super().log(request)

    def screen(self, request: Any) -> errors.APIError | None:
        """
        The answer a request with a body gets from its head alone, or
        ``None``: read its body.  Without a valid key, to no route or with the
        wrong method, or during a drain, it would be refused whatever its body
        holds: refusing it now means a flood of large keyless bodies is never
        buffered.  Checks run in L{handle}'s order (keys before routes); a
        CORS preflight is left to L{handle}.
        """
        if self.draining and request.path != _HEALTH:
            return errors.draining()
        if self.cors is not None and request.method == b"OPTIONS":
            return None
        if self.auth is not None:
            refused = self.auth.check(request)
            if refused is not None:
                return refused
            request.screened = True
        error = self.router.route_error(request.method, request.path)
        if error is not None:
            note_error(request, error.code or error.type)
        return error

    def refuse_request(self, request: Any, error: errors.APIError) -> None:
        """Answer ``request``, refused by L{screen}, as L{handle} would have."""
        request.setHeader(b"x-request-id", self.ids.request())
        self.active += 1
        if self.cors is not None:
            self.cors.apply(request)
        write_error(request, error, self.envelopes.for_path(request.path))

    def refused(self, request: Any) -> None:
        """``request`` was refused on its channel (never handled): count it."""
        if self.observer is not None:
            self.observer.finished(request)

    def handle(self, request: Any) -> None:
        """Every request, from either HTTP stack (with its Date field set), starts here."""
        request.setHeader(b"x-request-id", self.ids.request())
        self.active += 1
        # CORS first: a preflight is answered here, before keys and routes.
        if self.cors is not None and self.cors.apply(request):
            return
        if self.draining:
            request.setHeader(b"Connection", b"close")
            # ...and close it once this answer is out: twisted.web decides from
            # the client's headers only, the lean stack from keep_alive.
            if hasattr(request, "keep_alive"):
                request.keep_alive = False
            else:
                request.channel.persistent = False
            if request.path != _HEALTH:
                write_error(request, errors.draining(), self.envelopes.for_path(request.path))
                return
        if self.auth is not None and not request.screened:
            refused = self.auth.check(request)
            if refused is not None:
                write_error(request, refused, self.envelopes.for_path(request.path))
                return
        self.router.render(request)

    def request_finished(self, request: Any) -> None:
        if self.observer is not None:
            self.observer.finished(request)
        self.released()

    def request_lost(self, request: Any) -> None:
        if self.observer is not None:
            self.observer.finished(request, lost=True)
        self.released()

    def released(self) -> None:
        self.active -= 1
        if self.active == 0 and self._on_idle:
            calls, self._on_idle = self._on_idle, []
            for call in calls:
                call()

    def when_idle(self, call: Callable[[], None]) -> None:
        """Call ``call`` once no request is in flight (now, if none is)."""
        if self.active == 0:
            call()
        else:
            self._on_idle.append(call)
