# -*- test-case-name: tests.test_tls -*-
"""
HTTP/2 on ``ssl:`` listeners, chosen per connection by ALPN.

The lean stack (L{mockoai.wire.http11}) speaks HTTP/1.1 only, and the site's own
channels never offer ``h2``.  A TLS listener serves an L{AlpnFactory}
instead: it offers ``h2`` and ``http/1.1``, starts every connection on the
site's usual HTTP/1.1 channel (whose idle timeout also bounds a stalled
handshake), and when the handshake settles on ``h2`` hands the connection to
twisted.web's C{H2Connection} with the same site, so HTTP/2 requests get the
same router, headers, request counting, connection cap and drain.  After
the switch the TLS layer calls the chosen channel directly: the choice costs
nothing per read.  Plain TCP listeners never see this module.

HTTP/2 needs Twisted's ``http2`` extra (h2, priority); without it ALPN
offers ``http/1.1`` alone.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IProtocolNegotiationFactory,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web import http
from zope.interface import implementer  # type: ignore[import-untyped]

from mockoai.pipeline import errors
from mockoai.wire.site import MockRequest, MockSite

#: Whether twisted.web can speak HTTP/2 here (its ``http2`` extra is installed).
H2_AVAILABLE: bool = http.H2_ENABLED

#: Response headers HTTP/2 forbids (RFC 9113 section 8.2.2); the drain sets
#: ``Connection: close`` for HTTP/1.1 clients.
_CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding")


def is_tls(description: str) -> bool:
    """Whether a ``--listen`` endpoint string is a TLS server endpoint."""
    return description.split(":", 1)[0].strip().lower() == "ssl"


def factory_for(description: str, site: MockSite, http2: bool = True) -> Any:
    """The factory to listen with on ``description``: the site, or ALPN over it."""
    if http2 and H2_AVAILABLE and is_tls(description):
        return AlpnFactory(site)
    return site


@implementer(IProtocolNegotiationFactory)
class AlpnFactory(Factory):
    """Builds connections that pick HTTP/2 or HTTP/1.1 once TLS has negotiated."""

    def __init__(self, site: MockSite) -> None:
        self.site = site

    def acceptableProtocols(self) -> list[bytes]:
        return [b"h2", b"http/1.1"]

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Any:
        channel: Any = self.site.buildProtocol(addr)
        if not getattr(channel, "counted", False):
            return channel  # over the connection cap: its refusal closes the connection
        return AlpnSwitch(self.site, channel)


@implementer(IHandshakeListener)
class AlpnSwitch(Protocol):
    """
    What the TLS layer talks to: the HTTP/1.1 channel until the handshake
    negotiates ``h2``, then an L{H2Channel}.  Reads and the disconnect go to
    the current channel's own bound methods (instance attributes), so there
    is no forwarding call.
    """

    def __init__(self, site: MockSite, channel: Any) -> None:
        self.site = site
        self.channel = channel

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        self._use(self.channel)
        self.channel.makeConnection(transport)

    def _use(self, channel: Any) -> None:
        self.channel = channel
        self.dataReceived = channel.dataReceived  # type: ignore[method-assign]
        self.connectionLost = channel.connectionLost  # type: ignore[method-assign]

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        if transport.negotiatedProtocol != b"h2":
            return
        old = self.channel
        # The HTTP/1.1 channel never saw a byte: retire it quietly (no idle
        # or slow-header timer may close the connection for it), handing its
        # place under the connection cap to the HTTP/2 channel.
        set_timeout = getattr(old, "setTimeout", None)
        if set_timeout is not None:
            set_timeout(None)  # twisted.web's channel keeps its own idle timer
        self.site.header_deadlines.done(old)
        self.site.idle.discard(old)  # the lean channel's
        self.site.channels.discard(old)
        transport.unregisterProducer()  # twisted.web's channel registers itself
        channel = H2Channel(self.site)
        channel.counted, old.counted = old.counted, False
        self._use(channel)
        channel.makeConnection(transport)
        # The TLS layer pauses and resumes the H2Connection, which applies the
        # back-pressure to each stream's producer.
        transport.registerProducer(channel, True)


if H2_AVAILABLE:
    import h2.exceptions
    from twisted.web._http2 import H2Connection

    class H2Channel(H2Connection):
        """twisted.web's HTTP/2 connection, registered with the site like a channel."""

        site: MockSite  # type: ignore[assignment]
        transport: Any
        counted = False
        _closing = False

        def __init__(self, site: MockSite) -> None:
            super().__init__(site.clock)
            self.site = site
            self.factory = site  # type: ignore[assignment]
            self.requestFactory = H2Request
            self.timeOut = site.timeOut  # type: ignore[assignment]
            self.callLater = site.clock.callLater  # type: ignore[method-assign,assignment]

        def connectionMade(self) -> None:
            set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
            if set_nodelay is not None:
                with contextlib.suppress(OSError):
                    set_nodelay(True)
            super().connectionMade()
            self.site.channels.add(self)  # type: ignore[arg-type]

        def connectionLost(  # type: ignore[override]
            self,
            reason: Failure,
            _cancelTimeouts: bool = True,  # noqa: N803 (twisted's name)
        ) -> None:
            # Called twice when the peer sends GOAWAY (once by H2Connection itself).
            self.site.channels.discard(self)
            if self.counted:
                self.counted = False
                self.site.connections.close()
            super().connectionLost(reason, _cancelTimeouts=_cancelTimeouts)

        def timeoutConnection(self) -> None:
            super().timeoutConnection()  # GOAWAY, then loseConnection
            # The TLS layer closes only once its producer (this) is gone.
            self.transport.unregisterProducer()

        @property
        def busy(self) -> bool:
            """
            Whether a request is unanswered (the drain aborts busy connections
            last).  An answered stream may still have frames queued here:
            L{close_gracefully} waits for those.
            """
            return any(not stream._request.finished for stream in self.streams.values())

        def close_gracefully(self) -> None:
            """
            Close once every stream's last frame is out, saying GOAWAY (h2 can
            send nothing more after it, so it waits for the streams too).
            """
            if not self._closing:
                self._closing = True
                self._close_if_done()

        def _requestDone(self, streamID: int) -> None:  # noqa: N803 (twisted's name)
            super()._requestDone(streamID)
            if self._closing:
                self._close_if_done()

        def _close_if_done(self) -> None:
            transport = self.transport
            # (No GOAWAY on a connection already lost or closed by the peer.)
            if not self.streams and transport is not None and self._stillProducing:
                self._stillProducing = False
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.close_connection()
                    self._tryToWriteControlData()
                # The TLS layer closes only once its producer (this) is gone.
                transport.unregisterProducer()
                transport.loseConnection()


class H2Request(MockRequest):
    """
    A request on one HTTP/2 stream (its C{channel} is twisted.web's
    C{H2Stream}).  The body is kept in memory, as on HTTP/1.1 (twisted.web
    would spool bodies of unknown or large length to a temporary file); one
    over ``--max-body-size`` is dropped as it arrives and the stream answered
    with 413 once the client has finished sending.  As on HTTP/1.1 a body is
    judged from the head before a byte of it is kept (L{MockSite.screen}):
    one without a valid key, to no route or during a drain is dropped too,
    and the stream answered as its head decided.
    """

    _too_large = False
    _judged = False
    _refusal: errors.APIError | None = None

    def _judge(self) -> errors.APIError | None:
        """What the head alone decides (all its fields are in before any data)."""
        stream: Any = self.channel
        target: bytes = stream.path or b""
        self.method = stream.command or b""
        self.uri = target
        self.path = target.split(b"?", 1)[0]
        return stream.site.screen(self)  # type: ignore[no-any-return]

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.site.max_body_size:
            self._too_large = True
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if not self._judged:
            self._judged = True
            self._refusal = self._judge()
        if self._too_large or self._refusal is not None:
            return
        self._body_size += len(data)
        if self._body_size > self.channel.site.max_body_size:
            self._too_large = True
            self.content = io.BytesIO()
            return
        assert self.content is not None
        self.content.write(data)

    def process(self) -> None:
        site = self.site = self.channel.site
        self.setHeader(b"Date", site.date())  # (the lean stack writes its own)
        if self._refusal is not None:
            self._counted = True
            site.refuse_request(self, self._refusal)
            return
        if self._too_large:
            self.setHeader(b"x-request-id", site.ids.request())
            error = errors.body_too_large(site.max_body_size)
            # (twisted.web types ``content`` as optional; it is set by gotLength.)
            errors.write_error(self, error, site.envelopes.for_path(self.path))  # type: ignore[arg-type]
            return
        self._counted = True
        site.handle(self)

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            headers = self.responseHeaders
            for name in _CONNECTION_SPECIFIC:
                if headers.hasHeader(name):
                    headers.removeHeader(name)
        super().write(data)
