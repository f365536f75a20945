# -*- test-case-name: tests.test_dialect -*-
"""
What an API does differently over the one generation pipeline
(L{mockoai.pipeline.generate}): a L{Dialect} per endpoint, and the
L{Answer} it makes of each request.

The dialect validates the body (with whatever the API checks first: its
keys, its credits) into an Answer, and shapes errors in its envelope.  The
Answer resolves the model (OpenRouter: fallbacks, providers, moderation),
makes the ids and headers once the answer goes ahead, renders the plain
body and the stream's events, and hears how the answer ended when the
dialect keeps records of them.  The pipeline does everything else, the
same for every API: the rate limits, the plan, the faults, the timing.

A new API is one module under ``mockoai/dialects/`` subclassing both,
plus its routes in L{mockoai.routes} and its construction in
L{mockoai.ops.service}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from twisted.python.failure import Failure

from mockoai.pipeline import errors
from mockoai.pipeline.errors import Envelope, openai_envelope
from mockoai.pipeline.outcome import note_error, outcome_of

if TYPE_CHECKING:
    from mockoai.apierror import APIError
    from mockoai.interfaces import Request
    from mockoai.pipeline.faults import Faults
    from mockoai.pipeline.stream import Events, StreamProducer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan


class Dialect:
    """One API endpoint (chat or completions) as a client sees it."""

    #: The endpoint: CHAT or COMPLETIONS.
    kind: str
    #: How the API shapes an error body.
    envelope: Envelope = staticmethod(openai_envelope)
    #: Decides which answers break (L{mockoai.pipeline.faults}); None: none do.
    faults: Faults | None = None
    #: The status of a plain answer cut by a fault; None: the error's own.
    cut_status: int | None = None
    #: How the API answers an error raised on the request's way through the
    #: pipeline (a rate limit, a full engine queue) when it words or numbers
    #: it otherwise (Anthropic's 529); None: as raised, at no cost.
    refusal: Callable[[APIError, Request], APIError] | None = None

    def parse(self, request: Request) -> Answer:
        """The request's body, validated, as its L{Answer} (or the API's 4xx)."""
        raise NotImplementedError


class Answer:
    """
    One generation request on its way through the pipeline, in its
    dialect.  Made by L{Dialect.parse}; the pipeline calls L{resolve}, then
    L{begin} once the request has passed the gate and been planned, then
    L{body} (or L{broken}) or L{events}.
    """

    __slots__ = ("dialect", "plan", "request", "served", "wanted")

    #: Whether the pipeline reports how the answer ends: L{waiting} and
    #: L{ended} for a stream, L{abandoned} for a plain answer.  Off, a
    #: request pays nothing for them.
    hooked: ClassVar[bool] = False

    plan: Plan
    served: ServedModel

    def __init__(self, dialect: Dialect, request: Request, wanted: GenerationRequest) -> None:
        self.dialect = dialect
        self.request = request
        self.wanted = wanted

    def resolve(self) -> ServedModel:
        """The model that answers (sets L{served}), or the API's error."""
        raise NotImplementedError

    def begin(self, plan: Plan, cut: int | None) -> None:
        """
        The answer goes ahead as ``plan`` (broken off after ``cut`` tokens,
        if set): its id, its headers, the dialect's extras.
        """
        raise NotImplementedError

    def body(self) -> bytes:
        """The whole plain body, once its last token is out."""
        raise NotImplementedError

    def events(self) -> Events:
        """The events of the streamed answer."""
        raise NotImplementedError

    def mid_stream_error(self) -> APIError:
        """What an answer cut by a fault reports."""
        return errors.server_error()

    def broken(self) -> bytes:
        """
        The plain body of an answer cut by a fault: the mid-stream error, in
        the envelope; its model counts it as failed (it was never answered).
        """
        error = self.mid_stream_error()
        dialect = self.dialect
        request = self.request
        status = error.status if dialect.cut_status is None else dialect.cut_status
        request.setResponseCode(status)
        if dialect.cut_status is None:
            note_error(request, error.code or error.type)
        outcome = outcome_of(request)
        if outcome is not None:
            outcome.failed(status, error.code or error.type)
        for name, value in error.headers:
            request.setHeader(name, value)
        return dialect.envelope(error)

    # What the pipeline reports to a hooked answer.

    def waiting(self, stream: StreamProducer) -> None:
        """The stream's headers are out; its first token may not be."""

    def ended(self, _: None, stream: StreamProducer) -> None:
        """The stream is over, however it ended (a callback of its C{done})."""

    def abandoned(self, failure: Failure) -> Failure:
        """The plain answer will not be sent (an errback of its Deferred)."""
        return failure
