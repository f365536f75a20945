# -*- test-case-name: tests.test_hostile -*-
"""
What a client may send at the HTTP layer, enforced the same way by both
HTTP/1.1 stacks: the request-target length (414), the number and bytes of
header fields (431), and the slow-header deadline that sheds slow-loris
connections.

The deadline is not the idle timeout: a client that trickles one header
byte every few seconds is never idle, yet never finishes a request.  Every
connection waiting for a request head is kept in one insertion-ordered
table with the time its head began; since all share one timeout, the table
is also in deadline order, and one reactor timer (not one per connection)
closes the expired ones from the front.  A request whose head arrives in one
read costs two attribute checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

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
