# -*- test-case-name: tests.test_hostile -*-
"""
What a client may send at the HTTP layer, enforced the same way by both
HTTP/1.1 stacks: the request-target length (414), the number and bytes of
header fields (431), the slow-header deadline that sheds slow-loris
connections, the body deadline that sheds slow bodies (408), the default
connection cap, and how a refused connection is closed.

The deadline is not the idle timeout: a client that trickles one header
byte every few seconds is never idle, yet never finishes a request.  Every
connection waiting for a request head is kept in one insertion-ordered
table with the time its head began; since all share one timeout, the table
is also in deadline order, and one reactor timer (not one per connection)
closes the expired ones from the front.  A request whose head arrives in one
read costs two attribute checks.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import tcp
from twisted.logger import Logger

from mockoai.ops.config import AUTO_CONNECTIONS, BODY_RATE_GRACE
from mockoai.pipeline import errors
from mockoai.wire.heap import HEAP

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, DelayedCall

_log = Logger(namespace="mockoai.wire.guard")


def uri_too_long(limit: int) -> errors.APIError:
    return errors.APIError(
        414, f"Request URI too long: the limit is {limit} bytes.", code="uri_too_long"
    )


def too_many_headers(limit: int) -> errors.APIError:
    return errors.APIError(
        431,
        f"Request header fields too large: the limit is {limit} header fields.",
        code="request_header_fields_too_large",
    )


def headers_too_large(limit: int) -> errors.APIError:
    return errors.APIError(
        431,
        f"Request header fields too large: the limit is {limit} bytes.",
        code="request_header_fields_too_large",
    )


def header_timeout(seconds: float) -> errors.APIError:
    return errors.APIError(
        408,
        f"The request headers did not arrive within {seconds:g} s.",
        code="request_timeout",
    )


def malformed() -> errors.APIError:
    return errors.APIError(400, "Malformed HTTP request.")


def missing_host() -> errors.APIError:
    """RFC 9112 section 3.2: an HTTP/1.1 request without ``Host`` is a 400."""
    return errors.APIError(400, "Malformed HTTP request: an HTTP/1.1 request needs a Host header.")


def body_timeout(seconds: float) -> errors.APIError:
    return errors.APIError(
        408,
        f"The request body did not arrive within {seconds:g} s.",
        code="request_timeout",
    )


def body_too_slow(rate: int) -> errors.APIError:
    return errors.APIError(
        408,
        f"The request body arrived at under {rate} bytes/s.",
        code="request_timeout",
    )


#: Heads ended between two moments with none waiting after which the heap is
#: trimmed: thousands of shed connections leave their memory in the allocators.
TRIM_AFTER = 1000
#: Heads waiting at once that mark a flood: from then until fewer than a
#: quarter of that wait, new small objects go to the C heap, which can hand
#: them back (mockoai.wire.heap).  Not until none waits: a thousand busy keep-alive
#: clients always have a few heads in flight, so a flood of them connecting
#: at once kept the server diverted for good, and glibc's malloc made each of
#: their stream events dearer.  The heap is trimmed once none waits.
DIVERT_AT = 512
#: Seconds after a flood's release when the heap is trimmed once more.
RETRIM_AFTER = 10.0


def release_memory(collect: bool = True) -> None:
    """Small objects to pymalloc again, collect cycles, hand free heap to the OS."""
    HEAP.release(collect)


class Waiting(Protocol):
    """A channel that can be told its request head is overdue."""

    def header_timed_out(self) -> None: ...


class HeaderDeadlines:
    """
    Channels waiting for a request head, oldest first; closes the overdue.
    ``timeout`` 0 makes every method a no-op.
    """

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        #: Channel -> when its head began (insertion order is deadline order).
        self._began: dict[Waiting, float] = {}
        self._timer: DelayedCall | None = None
        self._release_call: DelayedCall | None = None
        #: Heads that ended (done or shed) since the heap was last trimmed.
        self._churn = 0
        #: A flood diverted small objects since the heap was last trimmed.
        self._flooded = False
        #: Connections closed for being too slow, since start.
        self.shed = 0
        # Deadlines that fall within ``_batch`` of each other share a sweep.
        self._batch = min(0.5, timeout / 10)

    def __len__(self) -> int:
        return len(self._began)

    def start(self, channel: Waiting) -> None:
        """``channel``'s head began now (no-op if already waiting)."""
        began = self._began
        if not self.timeout or channel in began:
            return
        began[channel] = self.clock.seconds()
        if len(began) == DIVERT_AT:
            self._flooded = True
            HEAP.divert()
        if self._timer is None:
            self._timer = self.clock.callLater(self.timeout + self._batch, self._sweep)

    def done(self, channel: Waiting) -> None:
        """``channel``'s head is complete, or it is gone."""
        began = self._began
        if began.pop(channel, None) is not None:
            if HEAP.diverted:
                self._ebbed()
            if not began:
                # Nothing left to watch: leave no timer behind (one connection
                # at a time costs one timer per connection, not per request).
                self.stop()
                self._none_waiting()

    def lost(self, channel: Waiting) -> None:
        """``channel`` is gone: an abandoned head counts towards a heap trim."""
        if channel in self._began:
            self._churn += 1
            self.done(channel)

    def _sweep(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        cutoff = now - self.timeout
        overdue = []
        for channel, began in self._began.items():
            if began > cutoff:
                break
            overdue.append(channel)
        for channel in overdue:
            del self._began[channel]
        self._ebbed()
        for channel in overdue:
            channel.header_timed_out()
        self.shed += len(overdue)
        self._churn += len(overdue)
        if overdue:
            _log.info(
                "closed {n} connection(s) whose request headers took over {t:g} s",
                n=len(overdue),
                t=self.timeout,
            )
        if not self._began:
            self._none_waiting()
        else:
            front = next(iter(self._began.values()))
            delay = max(0.0, front + self.timeout - now) + self._batch
            self._timer = self.clock.callLater(delay, self._sweep)

    def _ebbed(self) -> None:
        """Back to pymalloc once a flood has (mostly) gone."""
        if HEAP.diverted and len(self._began) < DIVERT_AT // 4:
            HEAP.restore()

    def _none_waiting(self) -> None:
        """After a flood (many heads ended, or small objects diverted): release memory."""
        flood = self._churn >= TRIM_AFTER or self._flooded or HEAP.diverted
        if flood and self._release_call is None:
            self._release_call = self.clock.callLater(1.0, self._release)

    def _release(self) -> None:
        self._release_call = None
        if self._began:
            return  # the flood is back: release when it ends
        # Abandoned heads leave cycles (their channels) to collect; a crowd
        # that connected at once and was served leaves none, and a full
        # collection under a thousand live streams stalls them ~50 ms.
        collect = self._churn > 0
        self._churn = 0
        self._flooded = False
        # A dict never shrinks: drop the one that held the flood.
        self._began = {}
        release_memory(collect)
        # Some of the flood's neighbours on the heap (timers, buffers) die a
        # little later and leave whole free pages behind them: trim again.
        self.clock.callLater(RETRIM_AFTER, release_memory, collect)

    def stop(self) -> None:
        """Cancel the timer (at shutdown, and in tests)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


# --------------------------------------------------------------------------
# Request bodies: a total deadline and a minimum rate.

#: Seconds between two sweeps of the bodies being read.
BODY_SWEEP = 1.0


class Reading(Protocol):
    """A channel reading a request body."""

    def body_received(self) -> int:
        """Bytes of the body read so far."""

    def body_timed_out(self, error: errors.APIError) -> None:
        """The body is overdue: answer ``error`` and close."""


class BodyDeadlines:
    """
    Channels reading a request body, with when its head ended; overdue ones
    get a 408.  A body is overdue once it has taken ``timeout`` seconds, or
    once it has taken ``grace`` seconds and averaged under ``min_rate``
    bytes/s since its head (one byte every 2 s, or silence, is shed after
    ``grace``; a 16 MiB body must come at 280 KB/s to beat the default 60 s).
    Like the slow-header deadline this is not the idle timeout, which any
    byte resets: while a body is watched the channel's idle timer is off.
    A body that arrives with its head never enters the table;
    one reactor timer sweeps the rest once a second while any is waiting.
    ``timeout`` and ``min_rate`` both 0 make every method a no-op.
    """

    def __init__(
        self, clock: Clock, timeout: float, min_rate: int, grace: float = BODY_RATE_GRACE
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.min_rate = min_rate
        self.grace = grace
        #: Whether bodies are watched (then they, not the idle timeout, bound a body).
        self.on = bool(timeout or min_rate)
        self._began: dict[Reading, float] = {}
        self._timer: DelayedCall | None = None
        #: Bodies cut for being too slow, since start.
        self.shed = 0

    def __len__(self) -> int:
        return len(self._began)

    def start(self, channel: Reading) -> None:
        """``channel``'s body began being read (no-op if already waiting)."""
        if not self.on or channel in self._began:
            return
        self._began[channel] = self.clock.seconds()
        if self._timer is None:
            self._timer = self.clock.callLater(BODY_SWEEP, self._sweep)

    def done(self, channel: Reading) -> None:
        """``channel``'s body is complete, refused, or gone."""
        if self._began.pop(channel, None) is not None and not self._began:
            self.stop()

    def _sweep(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        timeout, rate, grace = self.timeout, self.min_rate, self.grace
        overdue: list[tuple[Reading, errors.APIError]] = []
        for channel, began in self._began.items():
            elapsed = now - began
            if timeout and elapsed >= timeout:
                overdue.append((channel, body_timeout(timeout)))
            elif rate and elapsed >= grace and channel.body_received() < rate * elapsed:
                overdue.append((channel, body_too_slow(rate)))
        for channel, _ in overdue:
            del self._began[channel]
        for channel, error in overdue:
            channel.body_timed_out(error)
        if overdue:
            self.shed += len(overdue)
            _log.info("closed {n} connection(s) whose request body was too slow", n=len(overdue))
        if self._began:
            self._timer = self.clock.callLater(BODY_SWEEP, self._sweep)
        else:
            # A dict never shrinks: drop the one that held a flood of them.
            self._began = {}

    def stop(self) -> None:
        """Cancel the timer (at shutdown, and in tests)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


# --------------------------------------------------------------------------
# Idle keep-alive connections (the lean stack).


class Idling(Protocol):
    """A channel whose idle timeout the sweep keeps."""

    #: When it last became idle or read (the clock's seconds); None while it is not idle.
    idle_since: float | None

    def timeoutConnection(self) -> None:
        """Idle too long: close."""


class IdleSweep:
    """
    The idle timeout of every lean connection, kept by one coarse timer.

    Twisted's C{TimeoutMixin} cancels a timer as each request begins and
    arms a new one as it ends (and resets it on every read): three timer
    operations a request, a tenth of what a keep-alive ``GET /health``
    costs.  Here a channel only notes the time when it becomes idle or
    reads, and ``None`` while a request is in progress; a timer ticks every
    ``timeout / 10`` seconds (1 s at most) while any connection is open and
    closes those idle for ``timeout``: before ``timeout`` plus one tick has
    passed.  ``timeout`` 0 makes every method a no-op.
    """

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.interval = min(1.0, timeout / 10)
        self._channels: set[Idling] = set()
        self._timer: DelayedCall | None = None

    def __len__(self) -> int:
        return len(self._channels)

    def add(self, channel: Idling) -> None:
        """``channel`` is open (and idle until it reads)."""
        if not self.timeout:
            return
        channel.idle_since = self.clock.seconds()
        self._channels.add(channel)
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._sweep)

    def discard(self, channel: Idling) -> None:
        """``channel`` is gone."""
        channels = self._channels
        channels.discard(channel)
        if not channels and self._timer is not None:
            self.stop()

    def _sweep(self) -> None:
        cutoff = self.clock.seconds() - self.timeout
        overdue = [
            channel
            for channel in self._channels
            if channel.idle_since is not None and channel.idle_since <= cutoff
        ]
        for channel in overdue:
            self._channels.discard(channel)
            channel.timeoutConnection()
        self._timer = self.clock.callLater(self.interval, self._sweep) if self._channels else None

    def stop(self) -> None:
        """Cancel the timer (once no connection is open, at shutdown, and in tests)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


# --------------------------------------------------------------------------
# Connections: the default cap, and closing one that is refused.

#: File descriptors kept back from ``--max-connections auto`` for what is
#: not a client connection: listeners, logs, sibling sockets, and the
#: socket of a connection being refused with a 503.
FD_RESERVE = 100
#: The most file descriptors ``auto`` raises the soft limit to.
MAX_FDS = 1 << 20


def connection_cap(setting: int) -> int:
    """
    ``--max-connections`` as given, or for ``auto`` the file-descriptor
    limit (the soft limit raised to the hard one, as an epoll server may)
    less L{FD_RESERVE}.  Without a cap, a server out of descriptors fails
    every accept with EMFILE -- the listening socket stays readable, so
    Twisted retries and logs it on every reactor turn -- instead of
    answering a clean 503.
    """
    if setting != AUTO_CONNECTIONS:
        return setting
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = MAX_FDS if hard == resource.RLIM_INFINITY else min(hard, MAX_FDS)
    if soft == resource.RLIM_INFINITY:
        soft = ceiling
    elif soft < ceiling:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
    return max(soft - FD_RESERVE, 16)


#: Seconds a refused connection keeps reading (and dropping) what its client
#: still sends after the answer, before it is aborted.
LINGER = 2.0


def close_unread(transport: Any, clock: Clock) -> DelayedCall | None:
    """
    Close a connection refused while its client may still be sending (a
    body that will not be read).  Closing a socket with unread input makes
    the kernel answer with a reset, which can destroy the answer before the
    client reads it; so on plain TCP only the write side is shut (a FIN
    after the answer), whatever still arrives is read and dropped (the
    caller's C{dataReceived} ignores it), and the connection is aborted
    after L{LINGER} seconds at most: returned, to cancel if it closes first.
    TLS and other transports simply close.
    """
    if isinstance(transport, tcp.Server):
        transport.resumeProducing()  # paused while earlier answers went out
        transport.loseWriteConnection()
        return clock.callLater(LINGER, transport.abortConnection)
    transport.loseConnection()
    return None
