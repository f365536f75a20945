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
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mockoai.apierror import APIError

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.pipeline.stream import Pieces, StreamProducer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan


class Fault:
    """
    What goes wrong with one answer: ``refusal``, raised before its first
    token, or a cut once ``after`` tokens are out (the first that is set).
    """

    __slots__ = ("after", "refusal")

    def __init__(self, refusal: APIError | None = None, after: int | None = None) -> None:
        self.refusal = refusal
        self.after = after

    def __repr__(self) -> str:
        return f"Fault(refusal={self.refusal!r}, after={self.after!r})"


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


def cut_stream(stream: StreamProducer, after: int, error: APIError) -> None:
    """
    End ``stream`` once ``after`` tokens are out: the event that carries the
    ``after``-th token (or, for 0, the first event) is followed by the
    dialect's error event for ``error``, and nothing else is sent.  Call it
    before the stream starts.
    """
    timeline = stream.timeline
    needs, emit = timeline.needs, timeline.emit
    events = stream.events

    def until_cut(k: int) -> Pieces:
        pieces = emit(k)
        if events.sent >= after and not stream.broken:
            pieces += _break_off(stream, error)
            del needs[k + 1 :]
        return pieces

    timeline.emit = until_cut


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
