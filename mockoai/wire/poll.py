# -*- test-case-name: tests.test_poll -*-
"""
The epoll reactor's poll step, as mockoai runs it (``--lean-poll``, on by default).

Twisted's step hands each ready descriptor to its ``doRead`` or ``doWrite``
inside ``log.callWithLogger``: a log prefix looked up and a logging context
pushed and popped per descriptor, about 7 µs a request on CPython.  Ours
calls the same ``_doReadOrWrite`` directly, logs what escapes it as
callWithLogger would, and keeps everything else (disconnect handling, the
order of events) Twisted's own.

It also holds the answers written while one poll's ready descriptors are
handled (a L{SendBatch}) and sends them once the last is handled, or once
L{HOLD_LIMIT} connections hold some, whichever comes first.  Under
load one poll returns tens of readable connections: answering each as it is
parsed interleaves the kernel's loopback delivery and the client's wake-ups
with the parsing of the next, which cost a third of the server's CPU per
request at 64 connections (wrk, chat: 8,800 → 12,300 req/s, 113 → 81 µs).
A single connection pays nothing for it: its answer leaves when its read is
handled, as before.  Timers (paced streams, delayed answers) run outside a
poll step and write at once.

Only Twisted's ``EPollReactor`` (Linux's default) is stepped this way; with
any other reactor (``twistd -r ...``) the batch never opens and channels
write at once.
"""

from __future__ import annotations

import errno
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.logger import Logger

_log = Logger(namespace="mockoai.wire.poll")


class Batched(Protocol):
    """A connection whose writes a L{SendBatch} holds until its poll step ends."""

    def flush(self) -> None:
        """Send what is held (the connection may be gone: then drop it)."""


#: Connections whose answers a step holds before it sends them, and goes on.
#: Holding a whole poll's answers (40-70 of them when a burst arrives) kept
#: the first ones waiting 3-6 ms for the last, and sent the client a burst
#: to chew through while more arrivals queued: at 8,000 chat requests a
#: second, a request's time from read to send had a p99 of 4.1 ms held
#: whole, 2.1 ms sent in groups of 16, at the same CPU per request.
HOLD_LIMIT = 16


class SendBatch:
    """
    Connections holding answers written during the current poll step.

    Closed outside a step, so a channel checks one attribute per write;
    while open, a channel's first write registers it (L{hold}) and its
    writes are joined into one send at L{flush}: after the step's last
    read, or sooner once L{limit} connections hold answers.
    """

    def __init__(self, limit: int = HOLD_LIMIT) -> None:
        self.open = False
        self.held: list[Batched] = []
        self.limit = limit

    def hold(self, connection: Batched) -> None:
        """``connection`` holds writes; at L{limit} connections, those so far are sent."""
        held = self.held
        held.append(connection)
        if len(held) >= self.limit:
            self.flush()

    def flush(self) -> None:
        """Send every held connection's answers, in the order they were first written."""
        held, self.held = self.held, []
        for connection in held:
            try:
                connection.flush()
            except Exception:
                _log.failure("sending a held answer failed")


#: The batch of a reactor that is not stepped by L{LeanPoll}: never open.
CLOSED = SendBatch()


class LeanPoll:
    """The poll step of one ``EPollReactor``, installed over its ``doIteration``."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.batch = SendBatch()
        #: Services using it; the reactor gets its own step back when none is left.
        self.users = 0

    def step(self, timeout: float | None) -> None:
        """Twisted's ``EPollReactor.doPoll``, without the per-descriptor log context."""
        reactor = self.reactor
        selectables = reactor._selectables
        try:
            # As Twisted does: at most as many events as there are descriptors.
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        handle = reactor._doReadOrWrite
        batch = self.batch
        batch.open = True
        try:
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    handle(selectable, fd, event)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    # What escapes _doReadOrWrite (its disconnect handling):
                    # logged, and the other descriptors still handled.
                    _log.failure("handling {selectable} failed", selectable=selectable)
        finally:
            batch.open = False
            if batch.held:
                batch.flush()


def steppable(reactor: object) -> bool:
    """Whether ``reactor`` is Twisted's epoll reactor, whose step L{LeanPoll} replaces."""
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # no epoll (macOS, BSD): the reactor is kqueue's or poll's
        return False
    return type(reactor) is EPollReactor


def install(reactor: Any) -> LeanPoll:
    """Step ``reactor`` with a L{LeanPoll} (the one already installed, if any)."""
    current = getattr(reactor.doIteration, "__self__", None)
    if isinstance(current, LeanPoll):
        poll = current
    else:
        poll = LeanPoll(reactor)
        reactor.doIteration = poll.step
    poll.users += 1
    return poll


def uninstall(poll: LeanPoll) -> None:
    """Give the reactor its own step back once the last user of ``poll`` is done."""
    poll.users -= 1
    if poll.users == 0 and poll.reactor.__dict__.get("doIteration") == poll.step:
        del poll.reactor.doIteration


class HasBatch(Protocol):
    """The site: where its channels find the batch when they connect."""

    #: The batch its channels hold their writes in (L{CLOSED}: none).
    batch: SendBatch


class LeanPollService(Service):
    """
    Steps the reactor with a L{LeanPoll} while the server runs, and gives
    ``site`` its batch; started before the listeners, so every connection
    sees it.
    """

    def __init__(self, reactor: Any, site: HasBatch) -> None:
        self.reactor = reactor
        self.site = site
        self.poll: LeanPoll | None = None

    def startService(self) -> None:
        super().startService()
        if self.poll is None and steppable(self.reactor):
            self.poll = install(self.reactor)
            self.site.batch = self.poll.batch

    def stopService(self) -> None:
        super().stopService()
        poll, self.poll = self.poll, None
        if poll is not None:
            self.site.batch = CLOSED
            uninstall(poll)
