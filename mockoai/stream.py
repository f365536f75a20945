# -*- test-case-name: tests.test_stream -*-
"""
Writing an answer out over time: the SSE producer, and the timed
non-streaming reply.

Token ``t`` of a choice (0-based) is produced at ``ttft + t * itl`` after the
request arrives; an event leaves when its last token is produced.  Streams
are driven by the model's shared L{Pacer}, never by a timer of their own,
and are C{IPushProducer}s: a slow reader pauses them (the events due in the
meantime go out together on resume), and a disconnect stops them at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

from mockoai.pacing import Pacer, Waiter
from mockoai.render import EventStream, Pieces
from mockoai.sampling import ChoicePlan, Plan

#: Pieces buffered before a write, so an unpaced stream still yields to the
#: transport's back-pressure every few dozen events.
_WRITE_BATCH = 384

Emit = Callable[[], Pieces]


def timeline(plan: Plan, events: EventStream) -> Iterator[tuple[float, Emit]]:
    """Every event of the answer with the time it is due, in order."""
    if len(plan.choices) == 1:
        yield from _choice_timeline(plan, plan.choices[0], events)
        return
    keyed = (_keyed(plan, choice, events) for choice in plan.choices)
    for due, _index, _n, emit in heapq.merge(*keyed):
        yield due, emit


def _keyed(
    plan: Plan, choice: ChoicePlan, events: EventStream
) -> Iterator[tuple[float, int, int, Emit]]:
    # A function, not a nested generator expression: that one read
    # ``choice.index`` lazily, after the loop had moved on to the last choice,
    # so every choice got the same key and ties compared the emit callables.
    index = choice.index
    for n, (due, emit) in enumerate(_choice_timeline(plan, choice, events)):
        yield due, index, n, emit


def _choice_timeline(
    plan: Plan, choice: ChoicePlan, events: EventStream
) -> Iterator[tuple[float, Emit]]:
    ttft, itl = plan.ttft, plan.itl
    counts = choice.counts
    yield ttft + (counts[0] - 1) * itl if counts else ttft, lambda: events.opening(choice)
    for i, count in enumerate(counts):
        yield ttft + (count - 1) * itl, lambda i=i: events.content(choice, i)  # type: ignore[misc]
    last = ttft + (counts[-1] - 1) * itl if counts else ttft
    yield last, lambda: events.finish(choice)


@implementer(IPushProducer)
class StreamProducer:
    """Writes one SSE answer to one request, paced by a shared L{Pacer}."""

    def __init__(
        self,
        request: IRequest,
        plan: Plan,
        events: EventStream,
        pacer: Pacer,
    ) -> None:
        self.request = request
        self.events = events
        self.pacer = pacer
        self.clock: IReactorTime = pacer.clock
        self.done: Deferred[None] = Deferred(lambda _: self.stopProducing())
        self._timeline = timeline(plan, events)
        self._next: tuple[float, Emit] | None = None
        self._waiter: Waiter | None = None
        self._paused = False
        self._stopped = False
        self._t0 = 0.0

    def start(self) -> Deferred[None]:
        """Send the headers now and the events as they fall due."""
        self._t0 = self.clock.seconds()
        request = self.request
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(self._lost)
        request.write(b"")  # headers go out at once, as OpenAI's do
        self._run()
        return self.done

    def _run(self) -> None:
        self._waiter = None
        if self._paused or self._stopped:
            return
        # Absolute times, compared exactly as the Pacer compares them: with
        # ``(t0 + due) - t0 < due`` in floats, a relative test could find an
        # event the Pacer just ran "not yet due" and re-arm it forever.
        now = self.clock.seconds() + self.pacer.slack
        t0 = self._t0
        pieces: Pieces = []
        while True:
            upcoming = self._next
            if upcoming is None:
                upcoming = next(self._timeline, None)
                if upcoming is None:
                    self._write(pieces)
                    self._finish()
                    return
            due, emit = upcoming
            if t0 + due > now:
                self._next = upcoming
                break
            self._next = None
            pieces += emit()
            if len(pieces) >= _WRITE_BATCH:
                self._write(pieces)
                pieces = []
                if self._paused or self._stopped:
                    return
        self._write(pieces)
        if not (self._paused or self._stopped):
            self._waiter = self.pacer.at(t0 + due, self._run)

    def _write(self, pieces: Pieces) -> None:
        if pieces and not self._stopped:
            self.request.write(b"".join(pieces))

    def _finish(self) -> None:
        if self._stopped:
            return
        request = self.request
        request.write(b"".join(self.events.closing()))
        self._stopped = True
        request.unregisterProducer()
        request.finish()
        self.done.callback(None)

    def _lost(self, reason: Failure) -> None:
        self.stopProducing()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True
        if self._waiter is not None:
            self.pacer.cancel(self._waiter)
            self._waiter = None

    def resumeProducing(self) -> None:
        if self._paused and not self._stopped:
            self._paused = False
            self._run()

    def stopProducing(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._waiter is not None:
            self.pacer.cancel(self._waiter)
            self._waiter = None
        if not self.done.called:
            self.done.callback(None)


def delayed(pacer: Pacer, delay: float, render: Callable[[], bytes]) -> bytes | Deferred[bytes]:
    """A non-streaming body, rendered and released after ``delay`` seconds."""
    if delay <= 0:
        return render()
    waiter: Waiter | None = None

    def cancel(d: Deferred[bytes]) -> None:
        if waiter is not None:
            pacer.cancel(waiter)

    d: Deferred[bytes] = Deferred(cancel)

    def fire() -> None:
        if not d.called:
            d.callback(render())

    waiter = pacer.after(delay, fire)
    return d
