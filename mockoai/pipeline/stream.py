# -*- test-case-name: tests.test_stream -*-
"""
Writing an answer out over time: the SSE producer, and the timed
non-streaming reply.

Every event waits for a token: the role chunk and the first content chunk
for the first, each content chunk for its last, the finish chunk for the
choice's last.  What "token t is out" means depends on the model: with no
engine, token ``t`` is out at ``timing.at(t)`` after the request arrived and
the model's shared L{Pacer} wakes the stream then (never a timer of its
own); with an L{Engine}, the engine says when, step by step.  Streams are
C{IPushProducer}s: a slow reader pauses them (what falls due meanwhile goes
out together on resume), and a disconnect stops them at once -- and frees
their place in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from mockoai.apierror import APIError
from mockoai.ops.stats import ModelStats, Recorder
from mockoai.pipeline.errors import Envelope, openai_envelope, write_error
from mockoai.pipeline.outcome import note_error
from mockoai.sim.engine import FINISHED, Engine, Sequence
from mockoai.sim.pacing import Pacer, Waiter
from mockoai.sim.sampling import ChoicePlan, Plan

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Request

#: Where answers nobody asked to count are counted.
_UNCOUNTED = ModelStats()

#: Pieces buffered before a write, so an unpaced stream still yields to the
#: transport's back-pressure every few dozen events.
_WRITE_BATCH = 384

#: Byte strings and corpus slices, joined once per write.
Pieces = list["bytes | memoryview"]
Emit = Callable[[int], Pieces]


class Events(Protocol):
    """
    The events of one streamed answer, as a dialect renders them: each
    method returns the pieces of one or more SSE events.  ``sent`` counts
    the tokens the events returned so far carry.
    """

    sent: int

    def opening(self, choice: ChoicePlan) -> Pieces: ...

    def content(self, choice: ChoicePlan, event: int) -> Pieces: ...

    def finish(self, choice: ChoicePlan) -> Pieces: ...

    def closing(self) -> Pieces:
        """What ends a stream that ran its course (usage, ``[DONE]``)."""
        ...

    def error_event(self, error: APIError) -> Pieces:
        """What ends a stream broken off by ``error`` (L{mockoai.pipeline.faults})."""
        ...


class StreamHooks(Protocol):
    """What a dialect adds around its streams (L{mockoai.pipeline.dialect.Answer})."""

    def waiting(self, stream: StreamProducer) -> None: ...


class Timeline:
    """
    The events of an answer, in order: event ``k`` waits until ``needs[k]``
    tokens are out, and ``emit(k)`` renders it.

    Lists walked by index, not a generator of closures: no generator step
    and no new lambda per event on the paced hot path.  ``needs`` may be cut
    short while the stream runs (a stream broken off by a fault ends after
    its error event: L{mockoai.pipeline.faults.cut_stream}).
    """

    __slots__ = ("emit", "needs")

    def __init__(self, needs: list[int], emit: Emit) -> None:
        self.needs = needs
        self.emit = emit


def token_timeline(plan: Plan, events: Events) -> Timeline:
    """Every event of the answer with the number of tokens it waits for."""
    if len(plan.choices) == 1:
        return _choice_timeline(plan.choices[0], events)
    return _merged([_choice_timeline(choice, events) for choice in plan.choices])


def _merged(timelines: list[Timeline]) -> Timeline:
    """Several choices' events in one order: by need, then choice, then position."""
    order = sorted(
        (need, index, k)
        for index, timeline in enumerate(timelines)
        for k, need in enumerate(timeline.needs)
    )
    emits = [timeline.emit for timeline in timelines]

    def emit(k: int) -> Pieces:
        _, index, position = order[k]
        return emits[index](position)

    return Timeline([need for need, _, _ in order], emit)


def _choice_timeline(choice: ChoicePlan, events: Events) -> Timeline:
    """One choice: its opening, one event per content slice, its finish."""
    counts = choice.counts
    # A choice cut to nothing by a stop string still waits for its first token
    # (and one that reasoned away its every token, for all of them).
    first, last = (counts[0], counts[-1]) if counts else (max(choice.tokens, 1),) * 2
    contents = len(counts)
    content = events.content

    def emit(k: int) -> Pieces:
        if 0 < k <= contents:
            return content(choice, k - 1)
        return events.opening(choice) if k == 0 else events.finish(choice)

    return Timeline([first, *counts, last], emit)


def _nothing() -> None:
    pass


#: What a finished stream holds instead of its waiter.
_SPENT = Waiter(0.0, 0, _nothing)
_SPENT.active = False


@implementer(IPushProducer)
class StreamProducer:
    """Writes one SSE answer to one request, as its tokens come out."""

    def __init__(
        self,
        request: Request,
        plan: Plan,
        events: Events,
        pacer: Pacer,
        engine: Engine | None = None,
        stats: Recorder | None = None,
        hooks: StreamHooks | None = None,
        envelope: Envelope = openai_envelope,
        live: set[StreamProducer] | None = None,
    ) -> None:
        self.request = request
        self.plan = plan
        self.stats: Recorder = stats or _UNCOUNTED
        self._sent = 0
        self._last_write = 0.0
        self.events = events
        self.pacer = pacer
        self.engine = engine
        self.clock: Clock = pacer.clock
        self.hooks = hooks
        #: How an error before the first byte is written (the dialect's envelope).
        self.envelope = envelope
        self.done: Deferred[None] = Deferred(lambda _: self.stopProducing())
        #: The streams running, this one among them from start to end (so a
        #: drain can end those its grace period did not see finish).
        self._live = live
        #: The events to send, each with the tokens that must be out first.
        self.timeline = token_timeline(plan, events)
        #: Broken off by a fault: it ends on its error event, nothing after;
        #: or what ends it instead of its end (L{mockoai.pipeline.faults}: a
        #: hang, a reset), which then neither finishes the response nor counts it.
        self.broken: bool | Callable[[], None] = False
        #: The next event of the timeline to send.
        self._k = 0
        # One waiter, re-armed for each event (inactive until then).
        self._waiter = Waiter(0.0, 0, self._run)
        self._waiter.active = False
        self._sequence: Sequence | None = None
        self._produced = 0
        self._started = False
        self._paused = False
        self._stopped = False
        self._t0 = 0.0

    def release(self) -> None:
        """Give up this stream's place in its engine now, not when its plan ends."""
        if self.engine is not None and self._sequence is not None:
            self.engine.cancel(self._sequence)
            self._sequence = None

    def start(self) -> Deferred[None]:
        """
        Queue in the engine (raising the L{APIError} of a refusal before
        anything is sent), or start at once; the headers go out on admission.
        """
        self._t0 = self.clock.seconds()
        request = self.request
        request.registerProducer(self, True)
        if self._live is not None:
            self._live.add(self)
        if self.engine is not None:
            sequence = Sequence(
                self, len(self.plan.choices), self.plan.tokens, self.plan.prompt_tokens
            )
            try:
                self.engine.submit(sequence)
            except APIError:
                request.unregisterProducer()
                self._stopped = True
                self._unlink()
                raise
            self._sequence = sequence
        else:
            self.admitted()
        if not self._stopped:
            request.notifyFinish().addErrback(self._lost)
        return self.done

    @property
    def started(self) -> bool:
        """Whether its headers are out (admitted by its engine, if it has one)."""
        return self._started

    # engine listener

    def admitted(self) -> None:
        if self.engine is not None:
            self.stats.queued(self.clock.seconds() - self._t0)
        self._started = True
        self.request.write(b"")  # headers go out now, as OpenAI's do
        if self.engine is None:
            self._run()
        if self.hooks is not None and not self.done.called:
            self.hooks.waiting(self)

    def advanced(self, produced: int) -> None:
        self._produced = produced
        self._run()

    def failed(self, error: APIError) -> None:
        """Queued too long: nothing was sent yet, so answer with the error."""
        if self._stopped:
            return
        self._stopped = True
        self._unlink()
        self.stats.reject(error.status, error.code)
        request = self.request
        request.unregisterProducer()
        write_error(request, error, self.envelope)
        self.done.callback(None)

    def _run(self) -> None:
        if self._paused or self._stopped or not self._started:
            return
        # Absolute times, compared exactly as the Pacer compares them: with
        # ``(t0 + due) - t0 < due`` in floats, a relative test could find an
        # event the Pacer just ran "not yet due" and re-arm it forever.
        paced = self.engine is None
        now = self.clock.seconds() + self.pacer.slack
        at = self.plan.timing.at
        t0 = self._t0
        produced = self._produced
        timeline = self.timeline
        needs = timeline.needs
        emit = timeline.emit
        k = self._k
        pieces: Pieces = []
        while k < len(needs):
            need = needs[k]
            if (t0 + at(need - 1) > now) if paced else (need > produced):
                break
            pieces += emit(k)
            k += 1
            if len(pieces) >= _WRITE_BATCH:
                self._k = k
                self._write(pieces)
                pieces = []
                if self._paused or self._stopped:
                    return
        self._k = k
        self._write(pieces)
        if k == len(needs):
            self._finish()
        elif paced and not (self._paused or self._stopped):
            self.pacer.schedule(self._waiter, t0 + at(need - 1))

    def _write(self, pieces: Pieces) -> None:
        if pieces and not self._stopped:
            self.request.write(b"".join(pieces))
            sent = self.events.sent
            if sent > self._sent:
                # What the client sees: time to the first token, then the gap
                # per token between writes (k tokens in a write share its gap).
                now = self.clock.seconds()
                if not self._sent:
                    self.stats.first_token(now - self._t0)
                else:
                    k = sent - self._sent
                    self.stats.itl.record((now - self._last_write) / k, k)
                self._sent = sent
                self._last_write = now

    def _finish(self) -> None:
        if self._stopped:
            return
        request = self.request
        broken = self.broken
        if not broken:
            request.write(b"".join(self.events.closing()))
        elif broken is not True:
            broken()  # a fault that ends it otherwise (a hang, a reset)
            return
        plan = self.plan
        self.stats.completed(
            self.clock.seconds() - self._t0,
            prompt_tokens=plan.prompt_tokens,
            completion_tokens=plan.completion_tokens,
            choices=plan.choices,
        )
        self._end()

    def end_with(self, pieces: Pieces, code: str | None) -> None:
        """
        End now, on ``pieces`` (a dialect's error event: see
        L{mockoai.pipeline.faults.cut_now}), and end the response cleanly;
        recorded as cancelled after the tokens sent so far, ``code`` its error.
        """
        if self._stopped:
            return
        self.stats.cancel(self.events.sent)
        note_error(self.request, code)
        self.request.write(b"".join(pieces))
        self._end()

    def _end(self) -> None:
        """Over, the response ended: let go of the clock, the engine and the request."""
        self._stopped = True
        self._unlink()
        request = self.request
        request.unregisterProducer()
        request.finish()
        if self.broken:
            # Its place in the engine is free now, not when its plan would end.
            self.release()
        self.done.callback(None)

    def _unlink(self) -> None:
        """
        Let go of this stream's waiter, which holds ``self._run``: a cycle
        that left every finished stream (~26 objects) to the cyclic GC, whose
        gen-2 passes then stalled a thousand live streams for ~150 ms each.
        (``done`` needs nothing: a Deferred drops its canceller when it fires.)
        """
        self.pacer.cancel(self._waiter)
        self._waiter = _SPENT
        if self._live is not None:
            self._live.discard(self)
        sequence = self._sequence
        if sequence is not None and sequence.state == FINISHED:
            self._sequence = None  # it holds this stream as its listener

    def _lost(self, reason: Failure) -> None:
        self.stopProducing()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True
        self.pacer.cancel(self._waiter)

    def resumeProducing(self) -> None:
        if self._paused and not self._stopped:
            self._paused = False
            self._run()

    def stopProducing(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.stats.cancel(self.events.sent)
        self._unlink()
        self.release()
        # Unregistered, as every other ending is.  A transport whose connection
        # is lost stops its producer before the request hears of it, so ``done``
        # may find the request still open and finish it: with this stream still
        # registered, twisted.web logs "Producer was not unregistered" (critical).
        request = self.request
        if not getattr(request, "_disconnected", False):
            request.unregisterProducer()
        if not self.done.called:
            self.done.callback(None)


def after_tokens(
    engine: Engine | None,
    pacer: Pacer,
    plan: Plan,
    tokens: int,
    render: Callable[[], bytes],
    stats: Recorder | None = None,
) -> bytes | Deferred[bytes]:
    """
    A non-streaming body, rendered and released once each choice has
    ``tokens`` tokens out (all of them, or fewer for an answer cut short):
    when the engine has produced them, or when the timing says.
    """
    if engine is not None:
        return completed(engine, plan, render, stats, tokens)
    return delayed(pacer, plan.timing.at(tokens - 1), render, stats, plan)


def completed(
    engine: Engine,
    plan: Plan,
    render: Callable[[], bytes],
    stats: Recorder | None = None,
    tokens: int | None = None,
) -> Deferred[bytes]:
    """A non-streaming body, released when the engine has produced it all (or ``tokens``)."""
    sequence: Sequence | None = None

    def cancel(d: Deferred[bytes]) -> None:
        if sequence is not None:
            engine.cancel(sequence)
        (stats or _UNCOUNTED).cancel()

    if tokens is None:
        tokens = plan.tokens
    d: Deferred[bytes] = Deferred(cancel)
    listener = _Completion(d, plan, tokens, render, engine.clock, stats or _UNCOUNTED)
    # A plan of no choices (an embedding: a prefill alone) still takes a place.
    sequence = Sequence(listener, len(plan.choices) or 1, tokens, plan.prompt_tokens)
    engine.submit(sequence)
    return d


class _Completion:
    """Engine listener for a non-streaming answer: renders it once ``tokens`` are out."""

    def __init__(
        self,
        d: Deferred[bytes],
        plan: Plan,
        tokens: int,
        render: Callable[[], bytes],
        clock: Clock,
        stats: Recorder,
    ) -> None:
        self.d = d
        self.plan = plan
        self.tokens = max(tokens, 1)
        self.render = render
        self.clock = clock
        self.stats = stats
        self.t0 = clock.seconds()
        self.queued = 0.0
        self.first = 0.0

    def admitted(self) -> None:
        self.queued = self.clock.seconds() - self.t0

    def advanced(self, produced: int) -> None:
        now = self.clock.seconds() - self.t0
        if produced == 1:
            self.first = now
        if produced >= self.tokens and not self.d.called:
            _record(self.stats, self.plan, now, self.first, self.queued)
            self.d.callback(self.render())

    def failed(self, error: APIError) -> None:
        if not self.d.called:
            self.stats.reject(error.status, error.code)
            self.d.errback(error)


def _record(stats: Recorder, plan: Plan, e2e: float, ttft: float, queued: float) -> None:
    """A plain answer's latencies, as the engine or the timing made them: one call, its itl too."""
    stats.completed(
        e2e, ttft, queued, plan.prompt_tokens, plan.completion_tokens, plan.choices, plan.tokens
    )


def delayed(
    pacer: Pacer,
    delay: float,
    render: Callable[[], bytes],
    stats: Recorder | None = None,
    plan: Plan | None = None,
) -> bytes | Deferred[bytes]:
    """A non-streaming body, rendered and released after ``delay`` seconds (now, if none)."""
    if delay <= 0:
        # Nothing to wait for (a zero-latency profile): no timer, no Deferred, no closure.
        return _released(render, delay, stats, plan)
    waiter: Waiter | None = None

    def cancel(d: Deferred[bytes]) -> None:
        if waiter is not None:
            pacer.cancel(waiter)
        if stats is not None:
            stats.cancel()

    d: Deferred[bytes] = Deferred(cancel)

    def fire() -> None:
        if not d.called:
            d.callback(_released(render, delay, stats, plan))

    waiter = pacer.after(delay, fire)
    return d


def _released(
    render: Callable[[], bytes], delay: float, stats: Recorder | None, plan: Plan | None
) -> bytes:
    """The body of a plain answer ``delay`` seconds after it arrived, recorded."""
    if stats is not None and plan is not None:
        _record(stats, plan, delay, plan.ttft, 0.0)
    return render()
