# -*- test-case-name: tests.test_faults -*-
"""
Faults: what goes wrong with an answer, decided in one place for every
dialect and honoured at the only two points where it can be.

- A refusal before the first token: the L{APIError} is raised before any
  byte is written, so it is answered like any refusal -- its status, the
  dialect's envelope.
- A cut after N tokens: the timeline ends early.  A stream sends the
  dialect's mid-stream error event once N tokens are out, then ends: no
  closing usage chunk, no ``[DONE]``, and its place in the engine is freed
  at once.  A drain whose grace period is over cuts the streams still
  running the same way, at once (L{cut_now}).  A plain answer is the
  dialect's error body, sent when the N-th token would have been out
  (OpenRouter keeps the 200 of a generation that broke; OpenAI answers the
  error's own status).

A dialect draws the fault of each request through its L{Faults} (OpenRouter:
L{StreamErrors}, the per-model ``stream_error_rate``/``stream_error_after``).
Without faults a dialect's ``faults`` is None, and a request pays one
``None`` check for the whole seam.

Rules and control headers (L{mockoai.pipeline.control}) draw richer
faults through the same seam: a cut may end otherwise than on the error
event (L{TRUNCATE}: a clean close without the end of the stream;
L{MALFORMED}: an event that is not JSON, then a clean close; L{RESET}: a
TCP reset; L{HANG}: nothing more, ever), a request may get no answer at
all (L{HANG}, L{RESET}, L{EMPTY} before any byte), and the answer may be
another plan than the one drawn (a scripted one, or one timed otherwise),
paced by its own timing rather than the model's engine.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from mockoai.apierror import APIError
from mockoai.pipeline.errors import Envelope, openai_envelope, write_error
from mockoai.pipeline.media import EVENT_STREAM, JSON
from mockoai.pipeline.stream import completed

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.pipeline.outcome import Outcome
    from mockoai.pipeline.stream import Pieces, StreamProducer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.engine import Engine
    from mockoai.sim.pacing import Pacer
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan

#: How a fault ends an answer (L{Fault.end}), named as the fault grammar
#: names them (L{mockoai.pipeline.faultspec}).
ERROR_EVENT = "error-event"
TRUNCATE = "truncate"
MALFORMED = "malformed"
RESET = "reset"
HANG = "hang"
EMPTY = "empty"


class Fault:
    """
    What the seam decided for one answer, the first that is set of:
    ``refusal``, raised before its first token; a cut once ``after`` tokens
    are out, ending as ``end`` says (the dialect's error event unless it
    says otherwise); no answer at all (``after`` None and ``end`` one of
    L{HANG}, L{RESET}, L{EMPTY}).  ``plan``, if set, is answered instead of
    the one planned, paced by its own timing when ``timed`` (a scripted
    answer's chunks, a latency override) rather than by the model's engine.
    """

    __slots__ = ("after", "end", "plan", "refusal", "timed")

    def __init__(
        self,
        refusal: APIError | None = None,
        after: int | None = None,
        end: str = ERROR_EVENT,
        plan: Plan | None = None,
        timed: bool = False,
    ) -> None:
        self.refusal = refusal
        self.after = after
        self.end = end
        self.plan = plan
        self.timed = timed

    @property
    def silent(self) -> bool:
        """No answer at all: a hang, a reset or an empty body before any byte."""
        return self.after is None and self.end != ERROR_EVENT

    def __repr__(self) -> str:
        return (
            f"Fault(refusal={self.refusal!r}, after={self.after!r}, end={self.end!r}, "
            f"plan={'yes' if self.plan is not None else None}, timed={self.timed!r})"
        )


class Faults:
    """Decides, request by request, which answers break and how."""

    def draw(
        self, request: Request, wanted: GenerationRequest, served: ServedModel, plan: Plan
    ) -> Fault | None:
        """The fault of this answer, or None for an answer that goes well."""
        raise NotImplementedError


class StreamErrors(Faults):
    """
    Each model's ``stream_error_rate`` share of its answers breaks after
    ``stream_error_after`` tokens (an answer shorter than that ends first).
    The draws come from one generator seeded at startup, or from the
    request's ``seed``: the same seeded request always meets the same fate.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def draw(
        self, request: Request, wanted: GenerationRequest, served: ServedModel, plan: Plan
    ) -> Fault | None:
        spec = served.spec
        rate = spec.stream_error_rate
        if rate <= 0:
            return None
        if rate < 1:
            rng = self._rng if wanted.seed is None else random.Random(wanted.seed)
            if not rng.random() < rate:
                return None
        after = spec.stream_error_after
        if after > plan.completion_tokens:
            return None  # the answer ends before the failure would come
        return Fault(after=after)


def steps(plan: Plan, after: int) -> int:
    """
    How many tokens each choice has out when ``after`` tokens are out in
    all: what a plain answer cut there waits for (the engine makes one
    token of every choice per step).
    """
    return max(1, -(-after // max(len(plan.choices), 1)))


def cut_stream(stream: StreamProducer, after: int, error: APIError, end: str = ERROR_EVENT) -> None:
    """
    End ``stream`` once ``after`` tokens are out: the event that carries the
    ``after``-th token (or, for 0, the first event) is followed by what
    ``end`` says -- the dialect's error event for ``error`` (L{ERROR_EVENT}),
    nothing and a clean close (L{TRUNCATE}), the next event broken and a
    clean close (L{MALFORMED}), a TCP reset (L{RESET}), or nothing ever
    again (L{HANG}) -- and nothing else is sent.  Call it before the stream
    starts.
    """
    timeline = stream.timeline
    needs, emit = timeline.needs, timeline.emit
    events = stream.events
    ending = _ENDINGS[end]

    def until_cut(k: int) -> Pieces:
        pieces = emit(k)
        if events.sent >= after and not stream.broken:
            following = emit(k + 1) if end == MALFORMED and k + 1 < len(needs) else None
            pieces += ending(stream, error, following)
            del needs[k + 1 :]
        return pieces

    timeline.emit = until_cut


def _error_event(stream: StreamProducer, error: APIError, following: Pieces | None) -> Pieces:
    return _break_off(stream, error)


def _truncated(stream: StreamProducer, error: APIError, following: Pieces | None) -> Pieces:
    """Nothing more: the response ends cleanly (no end of stream) and the connection closes."""
    stream.broken = True
    stream.done.addCallback(_close_after, stream.request)
    return []


def _malformed(stream: StreamProducer, error: APIError, following: Pieces | None) -> Pieces:
    """The next event with its JSON cut in half, then as L{_truncated}."""
    _truncated(stream, error, following)
    if not following:  # cut at its last event: a broken event of no kind
        return [b'data: {"\n\n']
    return [malformed(b"".join(following))]


def _reset(stream: StreamProducer, error: APIError, following: Pieces | None) -> Pieces:
    """What is out stays out; then a TCP reset (the stream's end runs L{reset})."""

    def end() -> None:
        stream.broken = stream.release  # reset once; a second end only frees its place
        stream.release()
        reset(stream.request)

    stream.broken = end
    return []


def _hang(stream: StreamProducer, error: APIError, following: Pieces | None) -> Pieces:
    """Nothing more, and no end: the client's leaving (or a drain) ends it."""
    stream.broken = stream.release
    return []


_ENDINGS: dict[str, Callable[[StreamProducer, APIError, Pieces | None], Pieces]] = {
    ERROR_EVENT: _error_event,
    TRUNCATE: _truncated,
    MALFORMED: _malformed,
    RESET: _reset,
    HANG: _hang,
}


def malformed(event: bytes) -> bytes:
    """
    ``event`` (an SSE event, or a JSON body) with its JSON cut in half: the
    ``event:`` line, if any, kept, so each dialect's client reads an event
    of its own kind that does not parse.
    """
    start = event.find(b"data: ")
    start = 0 if start < 0 else start + 6
    end = event.find(b"\n", start)
    if end < 0:
        end = len(event)
    payload = event[start:end] or b'{"'
    broken = event[:start] + payload[: max(1, len(payload) // 2)]
    return broken + b"\n\n" if start else broken


def reset(request: Any) -> None:
    """
    Abort ``request``'s connection with a TCP reset, not a FIN (``SO_LINGER``
    0 before the close); over HTTP/2 the stream alone is reset (``RST_STREAM``).
    """
    channel = getattr(request, "channel", None)
    if channel is not None and hasattr(channel, "streamID"):  # twisted.web's H2Stream
        channel.abortConnection()
        return
    transport = getattr(channel, "transport", None)
    if transport is None:
        return
    _flush(channel)
    # Not a socket of ours (a test's transport): abort it all the same.
    with contextlib.suppress(AttributeError, OSError):
        transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    transport.abortConnection()


def close(request: Any) -> None:
    """Close ``request``'s connection once what is written is sent (HTTP/2: nothing to close)."""
    channel = getattr(request, "channel", None)
    if channel is None or hasattr(channel, "streamID"):
        return
    transport = getattr(channel, "transport", None)
    if transport is not None:
        _flush(channel)
        transport.loseConnection()


def _flush(channel: Any) -> None:
    """Send what the lean channel holds for its poll step: it goes out before the close."""
    flush = getattr(channel, "flush", None)
    if flush is not None:
        flush()


def _refused(failure: Failure, request: Request, envelope: Envelope) -> None:
    """The engine gave up on it before the cut (a queue timeout): that is its answer."""
    error = failure.value
    if (
        isinstance(error, APIError)
        and not request.finished
        and not getattr(request, "_disconnected", False)
    ):
        write_error(request, error, envelope)


def _close_after(result: None, request: Any) -> None:
    if not getattr(request, "_disconnected", False):
        close(request)


def silent(request: Request, end: str, stream: bool, stats: Outcome) -> bytes | Deferred[bytes]:
    """
    No answer at all: a 200 with an empty body (L{EMPTY}), a TCP reset
    (L{RESET}), or nothing until the client leaves (L{HANG}; counted then,
    as a client that gave up).
    """
    if end == EMPTY:
        request.setHeader(b"Content-Type", EVENT_STREAM if stream else JSON)
        stats.completed(0.0, completion_tokens=0)
        return b""
    if end == RESET:
        reset(request)
    return Deferred(lambda _: stats.cancel())


def cut_plain(
    request: Request,
    engine: Engine | None,
    pacer: Pacer,
    plan: Plan,
    after: int,
    end: str,
    body: Callable[[], bytes],
    stats: Outcome,
    envelope: Envelope = openai_envelope,
) -> Deferred[bytes]:
    """
    A plain answer broken once ``after`` tokens are out (by its engine or
    its timing), as ``end`` says: half its body and a clean close
    (L{TRUNCATE}), a body that is not JSON (L{MALFORMED}), a TCP reset
    (L{RESET}), or nothing (L{HANG}).  The request is answered here, so the
    Deferred never fires; the client's leaving cancels the wait.
    """
    t0 = pacer.clock.seconds()

    def act(_: object = None) -> None:
        if getattr(request, "_disconnected", False) or request.finished:
            return
        if end == RESET:
            reset(request)
            return
        if end == HANG:
            return
        whole = body()
        stats.completed(pacer.clock.seconds() - t0, completion_tokens=after)
        if end == MALFORMED:
            bad = malformed(whole)
            request.setHeader(b"Content-Length", b"%d" % len(bad))
            request.write(bad)
            request.finish()
            return
        request.setHeader(b"Content-Length", b"%d" % len(whole))
        request.write(whole[: len(whole) // 2])
        request.finish()
        close(request)

    tokens = steps(plan, after)
    if engine is not None:
        pending = completed(engine, plan, lambda: b"", None, tokens)
        pending.addCallbacks(act, _refused, errbackArgs=(request, envelope))

        def stop_engine(_: Deferred[bytes]) -> None:
            stats.cancel()
            pending.cancel()

        return Deferred(stop_engine)
    waiter = pacer.after(plan.timing.at(tokens - 1), act)

    def stop_waiting(_: Deferred[bytes]) -> None:
        stats.cancel()
        pacer.cancel(waiter)

    return Deferred(stop_waiting)


def count_cancel(failure: Failure, stats: Outcome) -> Failure:
    """An errback: a wait the client's leaving cancelled counts as cancelled."""
    if failure.check(CancelledError) is not None:
        stats.cancel()
    return failure


def cut_now(stream: StreamProducer, error: APIError) -> None:
    """
    End ``stream`` at once as a cut ends it: the dialect's error event for
    ``error``, nothing after (no usage chunk, no ``[DONE]``), then a clean
    end of the response -- what a drain does to the streams its grace period
    did not see finish, so that their clients read "the server is shutting
    down" and a close, not a reset they could not tell from a network
    failure.  Recorded as cancelled, with ``error``'s code.  A stream still
    queued in its engine has sent nothing: ``error`` is its answer.
    """
    if not stream.started:
        stream.release()  # out of its engine's queue first: never admitted now
        stream.failed(error)
    else:
        stream.end_with(_break_off(stream, error), error.code or error.type)


def _break_off(stream: StreamProducer, error: APIError) -> Pieces:
    """The dialect's error event for ``error``; ``stream`` is broken: nothing follows it."""
    stream.broken = True
    return stream.events.error_event(error)
