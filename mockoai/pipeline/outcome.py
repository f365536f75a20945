# -*- test-case-name: tests.test_metrics -*-
"""
What became of one request: the small record the request path fills in as
it goes and the request's end reads, for /metrics and the request log.

A generation request gets an L{Outcome} as ``request.outcome``; it is also
what the stream and answer code records into (it passes every call on to
the model's L{ModelStats}), so no code path needs a second call to feed it.
Other requests have none until an error gives them one.  When the request
ends -- answered, refused, or abandoned by its client -- the site calls its
finish hook (L{mockoai.ops.observe.Observer}) once, which reads the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mockoai.ops.stats import Finished, Histogram, ModelStats

#: Where bare records (errors before a model was known) count: nowhere.
_UNCOUNTED = ModelStats()


class Outcome:
    """
    One request's numbers (seconds and tokens; None when they did not
    happen), recorded on the way into its model's L{ModelStats}.
    """

    __slots__ = (
        "cancelled",
        "completion_tokens",
        "decision",
        "e2e",
        "error",
        "finish_reason",
        "model",
        "prompt_tokens",
        "queue",
        "stats",
        "stream",
        "ttft",
    )

    def __init__(
        self,
        stats: ModelStats | None = None,
        model: str = "",
        stream: bool = False,
        prompt_tokens: int | None = None,
    ) -> None:
        self.stats = _UNCOUNTED if stats is None else stats
        self.model = model
        self.stream = stream
        self.prompt_tokens = prompt_tokens
        self.completion_tokens: int | None = None
        self.queue: float | None = None
        self.ttft: float | None = None
        self.e2e: float | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.cancelled = False
        #: What rules or control headers decided for it (L{mockoai.pipeline.control.Decision}).
        self.decision: Any = None

    # The Recorder interface of the request path (see mockoai.ops.stats.Recorder).

    @property
    def itl(self) -> Histogram:
        return self.stats.itl

    def arrived(self) -> None:
        self.stats.arrived()

    def queued(self, seconds: float) -> None:
        self.queue = seconds
        self.stats.queued(seconds)

    def first_token(self, seconds: float) -> None:
        self.ttft = seconds
        self.stats.first_token(seconds)

    def completed(
        self,
        e2e: float,
        ttft: float | None = None,
        queue: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        choices: Iterable[Finished] = (),
        tokens: int = 0,
    ) -> None:
        self.e2e = e2e
        if ttft is not None:
            self.ttft = ttft
        if queue is not None:
            self.queue = queue
        if prompt_tokens is not None:
            self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        for choice in choices:
            self.finish_reason = choice.finish_reason
            break
        self.stats.completed(e2e, ttft, queue, prompt_tokens, completion_tokens, choices, tokens)

    def failed(self, status: int, code: str | None = None) -> None:
        self.error = code or self.error
        self.stats.failed(status, code)

    def reject(self, status: int = 429, code: str | None = None) -> None:
        self.error = code or self.error
        self.stats.reject(status, code)

    def refused(self, status: int) -> None:
        self.stats.refused(status)

    def cancel(self, tokens: int = 0) -> None:
        self.cancelled = True
        self.completion_tokens = tokens
        self.stats.cancel(tokens)


def outcome_of(request: Any) -> Outcome | None:
    """The request's record, if it has one."""
    return getattr(request, "outcome", None)


def attach(
    request: Any, stats: ModelStats, model: str, stream: bool, prompt_tokens: int | None = None
) -> Outcome:
    """A generation request's record, attached to it; record into this, not ``stats``."""
    outcome = request.outcome = Outcome(stats, model, stream, prompt_tokens)
    return outcome


def note_error(request: Any, code: str | None) -> None:
    """An error answer: the request's record says which (making one if needed)."""
    outcome = outcome_of(request)
    if outcome is None:
        try:
            outcome = request.outcome = Outcome()
        except AttributeError:  # a request type without the slot: nothing to note
            return
    outcome.error = code
