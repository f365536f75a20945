"""
Structural types for the Twisted interfaces mockoai calls.

Twisted declares its interfaces with zope.interface, whose methods take no
``self``: without a zope plugin mypy cannot call them on a provider.  These
Protocols say the same for the parts mockoai uses, so a reactor or a
L{twisted.internet.task.Clock} is a L{Clock}, and twisted.web's requests and
L{mockoai.wire.http11.LeanRequest} are L{Request}s.  For annotations only:
modules import this one under C{TYPE_CHECKING}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress


class DelayedCall(Protocol):
    """C{IDelayedCall}: what L{Clock.callLater} returns."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """C{IReactorTime}."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: object, **kwargs: object
    ) -> DelayedCall: ...


class Transport(Protocol):
    """C{ITransport}, and the C{IConsumer} half a TCP or TLS transport also provides."""

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def getPeer(self) -> IAddress: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


class Request(Protocol):
    """The slice of C{IRequest} mockoai's handlers and producers use."""

    @property
    def method(self) -> bytes: ...

    @property
    def uri(self) -> bytes: ...

    @property
    def path(self) -> bytes: ...

    @property
    def content(self) -> IO[bytes]: ...

    @property
    def finished(self) -> int: ...

    #: The client went away (twisted.web's name, which the lean stack shares).
    _disconnected: bool

    def getHeader(self, name: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def respond(self, body: bytes) -> None:
        """Answer with ``body`` whole (a Content-Length), and finish."""

    def notifyFinish(self) -> Deferred[None]: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...
