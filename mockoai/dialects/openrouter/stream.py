# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter streams: the shared L{StreamProducer}, plus what OpenRouter adds.

- ``: OPENROUTER PROCESSING`` comments while a stream waits for its first
  token.  One L{Processing} per model beats on the model's L{Pacer}: one
  waiter for all its waiting streams, never a timer per stream.
- A stream that fails mid-way ends right after its error event: no more
  chunks, no usage chunk, no ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from mockoai.dialects.openai.render import Pieces
from mockoai.dialects.openrouter.errors import RouterError
from mockoai.dialects.openrouter.render import RouterEvents
from mockoai.ops.stats import Recorder
from mockoai.pipeline.errors import APIError
from mockoai.pipeline.stream import StreamProducer, Timeline
from mockoai.sim.engine import Engine, Sequence
from mockoai.sim.pacing import Pacer, Waiter
from mockoai.sim.sampling import Plan

if TYPE_CHECKING:
    from mockoai.interfaces import Request

COMMENT = b": OPENROUTER PROCESSING\n\n"


class Processing:
    """Sends L{COMMENT} every ``interval`` seconds to a model's streams awaiting a first token."""

    def __init__(self, pacer: Pacer, interval: float) -> None:
        self.pacer = pacer
        self.interval = interval
        self.waiting: dict[RouterStream, None] = {}
        self._waiter: Waiter | None = None
        self.beats = 0

    def add(self, stream: RouterStream) -> None:
        """``stream`` has sent its headers and waits: comment now and on every beat."""
        if self.interval <= 0:
            return
        stream.request.write(COMMENT)
        self.waiting[stream] = None
        if self._waiter is None:
            self._waiter = self.pacer.after(self.interval, self._beat)

    def discard(self, stream: RouterStream) -> None:
        self.waiting.pop(stream, None)
        if not self.waiting and self._waiter is not None:
            self.pacer.cancel(self._waiter)
            self._waiter = None

    def _beat(self) -> None:
        self._waiter = None
        self.beats += 1
        for stream in list(self.waiting):
            stream.request.write(COMMENT)
        if self.waiting:
            self._waiter = self.pacer.after(self.interval, self._beat)


def _until_failed(timeline: Timeline, events: RouterEvents) -> Timeline:
    """The producer's events, ending after the one that carried the error."""
    needs, emit = timeline.needs, timeline.emit

    def until_failed(k: int) -> Pieces:
        pieces = emit(k)
        if events.failed:
            del needs[k + 1 :]
        return pieces

    return Timeline(needs, until_failed)


class RouterStream(StreamProducer):
    """One OpenRouter SSE answer, paced exactly like an OpenAI one."""

    events: RouterEvents

    def __init__(
        self,
        request: Request,
        plan: Plan,
        events: RouterEvents,
        pacer: Pacer,
        engine: Engine | None,
        processing: Processing,
        stats: Recorder | None = None,
    ) -> None:
        super().__init__(request, plan, events, pacer, engine, stats)
        self.processing = processing
        self.first_at: float | None = None
        events.first = self._first
        self.done.addBoth(self._ended)

    def timeline(self) -> Timeline:
        timeline = super().timeline()
        if self.events.fail_after is not None:
            timeline = _until_failed(timeline, self.events)
        return timeline

    def admitted(self) -> None:
        super().admitted()
        if not self.events.started and not self.done.called:
            self.processing.add(self)

    def failed(self, error: APIError) -> None:
        """Timed out in the engine's queue: the error in OpenRouter's envelope."""
        if not isinstance(error, RouterError):
            error = RouterError(error.status, error.message, None, error.headers)
        super().failed(error)

    def _first(self) -> None:
        self.first_at = self.clock.seconds()
        self.processing.discard(self)

    def _ended(self, result: object) -> object:
        self.processing.discard(self)
        self.events.first = None  # a bound method of this stream: no cycle left behind
        if self.events.failed:
            # A stream that broke off frees its place in the engine at once,
            # not when its planned answer would have ended.
            self.release()
        return result


class _AfterTokens:
    """Engine listener: renders once ``tokens`` tokens are out (or fails with the engine)."""

    def __init__(self, d: Deferred[bytes], tokens: int, render: Callable[[], bytes]) -> None:
        self.d = d
        self.tokens = max(tokens, 1)
        self.render = render

    def admitted(self) -> None:
        pass

    def advanced(self, produced: int) -> None:
        if produced >= self.tokens and not self.d.called:
            self.d.callback(self.render())

    def failed(self, error: APIError) -> None:
        if not self.d.called:
            self.d.errback(error)


def after_tokens(
    engine: Engine, plan: Plan, tokens: int, render: Callable[[], bytes]
) -> Deferred[bytes]:
    """A non-streaming body released once the engine has produced ``tokens`` tokens."""
    sequence: Sequence | None = None

    def cancel(d: Deferred[Any]) -> None:
        if sequence is not None:
            engine.cancel(sequence)

    d: Deferred[bytes] = Deferred(cancel)
    sequence = Sequence(
        _AfterTokens(d, tokens, render), len(plan.choices), max(tokens, 1), plan.prompt_tokens
    )
    engine.submit(sequence)
    return d
