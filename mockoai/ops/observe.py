# -*- test-case-name: tests.test_metrics -*-
"""
The one hook at the end of every request: counted per endpoint, model and
status for /metrics, and handed to the request log when there is one.

The site calls L{Observer.finished} once per request, from either HTTP
stack, whether the answer went out or the client left first.  The cost
when the request log is off is a dict lookup and an increment, and a
tuple appended to the bounded ring of latest requests the dashboard shows.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Optional, Protocol

from mockoai.ops.stats import OTHER
from mockoai.pipeline.outcome import Outcome

if TYPE_CHECKING:
    from mockoai.interfaces import Clock

#: The status of a request whose client left before anything was sent
#: (nginx's "client closed request").
CLIENT_CLOSED = 499
#: Distinct (endpoint, model, status) series kept; beyond, the model is OTHER.
MAX_SERIES = 4096

#: Paths served as themselves; parametrised ones get a template (see label).
_EXACT = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/v1/chat/completions",
    "/api/v1/completions",
    "/api/v1/responses",
    "/api/v1/models",
    "/api/v1/generation",
    "/api/v1/key",
    "/api/v1/auth/key",
    "/api/v1/credits",
    "/health",
    "/stats",
    "/metrics",
    "/_mockoai/dashboard",
    "/_mockoai/dashboard/events",
    "/_mockoai/rules",
    "/_mockoai/models",
    "/_mockoai/reset",
    "/_mockoai/journal",
    "/_mockoai/verdict",
)
_LABELS = {path.encode(): path for path in _EXACT}


def endpoint_label(path: bytes) -> str:
    """The route a path belongs to, as a bounded label (``other`` for unknown paths)."""
    label = _LABELS.get(path)
    if label is not None:
        return label
    if path.startswith(b"/v1/models/"):
        return "/v1/models/{model}"
    if path.startswith(b"/v1/responses/"):
        if path.endswith(b"/input_items"):
            return "/v1/responses/{id}/input_items"
        return "/v1/responses/{id}"
    if path.startswith(b"/_mockoai/models/"):
        return "/_mockoai/models/{model}"
    if path.startswith(b"/api/v1/models/"):
        if path.endswith(b"/endpoints"):
            return "/api/v1/models/{model}/endpoints"
        return "/api/v1/models/{model}"
    return "other"


class RequestCounts:
    """
    Finished requests per (endpoint, model, status), and error answers per
    (status, kind): plain ints in dicts.  The kind is the error's code (or
    type), as the answer said it; empty for a client that left (499).
    """

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.kinds: dict[tuple[int, str], int] = {}
        self.max_series = max_series

    def add(self, endpoint: str, model: str, status: int) -> None:
        counts = self.counts
        key = (endpoint, model, status)
        n = counts.get(key)
        if n is None and len(counts) >= self.max_series:
            key = (endpoint, OTHER, status)
            n = counts.get(key)
        counts[key] = (n or 0) + 1

    def failed(self, status: int, kind: str | None) -> None:
        kinds = self.kinds
        key = (status, kind or "")
        n = kinds.get(key)
        if n is None and len(kinds) >= self.max_series:
            key = (status, OTHER)
            n = kinds.get(key)
        kinds[key] = (n or 0) + 1

    def state(self) -> list[tuple[str, str, int, int]]:
        return [(e, m, s, n) for (e, m, s), n in self.counts.items()]

    def kinds_state(self) -> list[tuple[int, str, int]]:
        return [(s, k, n) for (s, k), n in self.kinds.items()]

    def load(self, state: list[Any]) -> RequestCounts:
        counts = self.counts
        for endpoint, model, status, n in state:
            key = (endpoint, model, status)
            counts[key] = counts.get(key, 0) + n
        return self


#: Latest requests kept per process, for the dashboard's table.
RECENT = 32

#: (finished at, endpoint, status, outcome): what the hook has, unformatted.
Recent = deque[tuple[float, str, int, Optional[Outcome]]]


def recent_ring(size: int = RECENT) -> Recent:
    return deque(maxlen=size)


def recent_state(ring: Recent) -> list[list[Any]]:
    """
    The ring, oldest first, JSON-able: ``[time, endpoint, status, model,
    stream, ttft_ms, e2e_ms, prompt_tokens, completion_tokens, error]``
    (model and the rest null for requests with no record).
    """
    out: list[list[Any]] = []
    for at, endpoint, status, outcome in ring:
        if outcome is None:
            out.append([at, endpoint, status, None, None, None, None, None, None, None])
            continue
        ttft, e2e = outcome.ttft, outcome.e2e
        out.append(
            [
                at,
                endpoint,
                status,
                outcome.model or None,
                outcome.stream,
                None if ttft is None else round(ttft * 1000.0, 3),
                None if e2e is None else round(e2e * 1000.0, 3),
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.error,
            ]
        )
    return out


class Sink(Protocol):
    """Where finished requests go besides the counts (the request log)."""

    def add(self, request: Any, status: int, endpoint: str, outcome: Outcome | None) -> None: ...


class Observer:
    """Sees every request end once; counts it, keeps it in the ring, and logs it if asked."""

    def __init__(
        self,
        counts: RequestCounts,
        log: Sink | None = None,
        recent: Recent | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.counts = counts
        self.log = log
        #: The journal, while it is kept (L{mockoai.ops.journal}); None: not a call.
        self.journal: Sink | None = None
        self.recent = recent
        # Bound once: the ring costs a request one clock read, a tuple and an append.
        self._keep = None if recent is None else recent.append
        self._seconds = time.time if clock is None else clock.seconds

    def finished(self, request: Any, lost: bool = False) -> None:
        outcome: Outcome | None = getattr(request, "outcome", None)
        status = request.code
        if lost and not _started(request):
            status = CLIENT_CLOSED
        # Every request passes here: the calls of endpoint_label and
        # RequestCounts.add are saved for a known path and a series seen before.
        path = request.path
        endpoint = _LABELS.get(path) or endpoint_label(path)
        key = (endpoint, outcome.model if outcome is not None else "", status)
        series = self.counts.counts
        n = series.get(key)
        if n is not None:
            series[key] = n + 1
        else:
            self.counts.add(*key)
        if status >= 400:
            self.counts.failed(status, outcome.error if outcome is not None else None)
        keep = self._keep
        if keep is not None:
            keep((self._seconds(), endpoint, status, outcome))
        if self.log is not None:
            self.log.add(request, status, endpoint, outcome)
        if self.journal is not None:
            self.journal.add(request, status, endpoint, outcome)


def _started(request: Any) -> bool:
    """Whether the response had begun (lean stack: started; twisted.web: startedWriting)."""
    started = getattr(request, "started", None)
    if started is None:
        started = getattr(request, "startedWriting", False)
    return bool(started)
