# -*- test-case-name: tests.test_dashboard -*-
"""
``GET /_mockoai/dashboard``: a live page over the numbers the server keeps
anyway, pushed to it as server-sent events from
``GET /_mockoai/dashboard/events``.

One timer per process, running only while a page is connected, gathers the
raw state /metrics reads (every worker's, with --workers), turns it into one
snapshot -- rates and latency percentiles since the last tick, engine queues
per model, totals, the latest requests -- and writes that one event to every
connected page.  Rates are differences taken per worker (each process has
its own L{Metrics.name}), so a worker that misses a tick or restarts shows
as a dip, not as a spike of its whole history.  A page whose connection is
backed up (its transport paused the stream) skips snapshots rather than
buffering them: each one stands alone.  Nothing here runs per request; the
finish hook's only addition is a tuple in a bounded ring
(L{mockoai.ops.observe.recent_ring}).
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any

import ujson
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from mockoai.ops.stats import REPORTED, Histogram, latency_histogram
from mockoai.pipeline.media import EVENT_STREAM

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Request
    from mockoai.ops.metrics import Metrics, State

_log = Logger(namespace="mockoai")

PAGE = "/_mockoai/dashboard"
EVENTS = PAGE + "/events"
HTML = b"text/html; charset=utf-8"

#: Points kept for a page that connects later (5 minutes at the default 1 s).
HISTORY = 300
#: Seconds of requests the latency percentiles cover (a sliding window).
WINDOW = 10.0
#: Latest requests a snapshot lists (across workers).
SHOWN = 20
#: Seconds a silent worker's last totals are kept to take differences from.
FORGET = 60.0
#: The server watching itself, left out of the request rates and totals.
OPS = frozenset({"/health", "/metrics", "/stats", PAGE, EVENTS})
#: Milliseconds a page waits before reconnecting (the SSE ``retry`` field).
RETRY_MS = 2000

_PERCENTILES = [p for _, p in REPORTED]


class Totals:
    """One worker's cumulative numbers, reduced to what the charts difference."""

    __slots__ = ("at", "generation", "itl", "prompt", "requests", "ttft")

    def __init__(self, at: float) -> None:
        self.at = at
        #: Finished API requests by status (the server's own endpoints left out).
        self.requests: dict[int, int] = {}
        self.prompt = 0.0
        self.generation = 0.0
        #: Latency histogram buckets (index -> count), every model together.
        self.ttft: dict[int, int] = {}
        self.itl: dict[int, int] = {}

    @classmethod
    def of(cls, state: State, at: float) -> Totals:
        totals = cls(at)
        requests = totals.requests
        for endpoint, _model, status, n in state["requests"]:
            if endpoint not in OPS:
                requests[status] = requests.get(status, 0) + n
        for model in state["stats"].values():
            histograms = model["histograms"]
            totals.prompt += histograms["prompt_tokens"]["total"]
            # As vllm:generation_tokens counts them: abandoned streams' tokens too.
            totals.generation += histograms["completion_tokens"]["total"]
            totals.generation += model["cancelled_tokens"]
            _add(totals.ttft, histograms["ttft"]["b"])
            _add(totals.itl, histograms["itl"]["b"])
        return totals


def _add(into: dict[int, int], buckets: list[Any]) -> None:
    for i, n in buckets:
        into[i] = into.get(i, 0) + n


def _minus(now: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    out = {}
    for key, n in now.items():
        d = n - before.get(key, 0)
        if d:
            out[key] = d
    return out


def _rounded(value: float) -> float:
    return round(value, 3)


@implementer(IPushProducer)
class _Page:
    """One connected page: its request, paused while its transport is backed up."""

    __slots__ = ("done", "paused", "request", "stream")

    def __init__(self, stream: Dashboard, request: Request) -> None:
        self.stream = stream
        self.request = request
        self.paused = False
        self.done: Deferred[None] = Deferred(lambda _: stream.lost(self))

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stream.lost(self)


class Dashboard(Service):
    """
    The page, and the one timer that feeds every connected page with
    snapshots; a child of the service tree, so stopping it ends the streams.
    """

    def __init__(self, metrics: Metrics, clock: Clock, interval: float = 1.0) -> None:
        self.metrics = metrics
        self.clock = clock
        self.interval = interval
        self.pages: list[_Page] = []
        #: The series part of recent snapshots, for pages that connect later.
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._loop: LoopingCall | None = None
        #: Bumped when the timer stops: a gather still in flight is then dropped.
        self._generation = 0
        self._at: float | None = None
        self._totals: dict[str, Totals] = {}
        self._window: deque[tuple[dict[int, int], dict[int, int]]] = deque(
            maxlen=max(1, round(WINDOW / interval))
        )
        self._layout = latency_histogram()
        self._last = b""
        self._page: tuple[bytes, bytes] | None = None

    # --- the page ---

    def page(self, request: Request) -> bytes:
        """The page: one HTML document with its script and style inlined."""
        if self._page is None:
            self._page = _build_page()
        body, policy = self._page
        request.setHeader(b"Content-Type", HTML)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        # The browser itself holds the page to "nothing fetched but the events".
        request.setHeader(b"Content-Security-Policy", policy)
        return body

    # --- the event stream ---

    def connect(self, request: Request) -> bytes | Deferred[None]:
        """
        Stream snapshots to ``request`` until it goes away or the server
        stops: the history first, so the charts start filled.
        """
        if request.method == b"HEAD":
            request.setHeader(b"Content-Type", EVENT_STREAM)
            return b""
        request.setHeader(b"Content-Type", EVENT_STREAM)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx: pass events on at once
        page = _Page(self, request)
        request.registerProducer(page, True)
        history = {"interval": self.interval, "points": list(self.history)}
        request.write(b"retry: %d\n\n" % RETRY_MS + _event(b"history", history) + self._last)
        self.pages.append(page)
        request.notifyFinish().addErrback(lambda _: self.lost(page))
        self._start()
        return page.done

    def lost(self, page: _Page) -> None:
        """The page's connection is gone (or its request was cancelled)."""
        if page in self.pages:
            self.pages.remove(page)
            self._stop_if_idle()
            # A transport stops its producer before the request hears the
            # connection is gone: ``done`` may then find the request open and
            # finish it, which twisted.web refuses (critically) while registered.
            request = page.request
            if not getattr(request, "_disconnected", False):
                request.unregisterProducer()
        if not page.done.called:
            page.done.callback(None)

    def close(self) -> None:
        """End every stream cleanly (shutdown: a page must not hold up the drain)."""
        pages, self.pages = self.pages, []
        self._stop_if_idle()
        for page in pages:
            request = page.request
            request.unregisterProducer()
            if not request.finished and not getattr(request, "_disconnected", False):
                request.finish()
            if not page.done.called:
                page.done.callback(None)

    def stopService(self) -> None:
        super().stopService()
        self.close()

    def broadcast(self, event: bytes) -> None:
        for page in list(self.pages):
            if not page.paused:
                page.request.write(event)

    # --- the timer ---

    @property
    def ticking(self) -> bool:
        return self._loop is not None and self._loop.running

    def _start(self) -> None:
        if self.ticking:
            return
        loop = self._loop = LoopingCall(self.tick)
        loop.clock = self.clock  # type: ignore[assignment]
        loop.start(self.interval, now=True).addErrback(self._failed)

    def _stop_if_idle(self) -> None:
        if self.pages or not self.ticking:
            return
        assert self._loop is not None
        self._loop.stop()
        self._loop = None
        # The next page starts afresh: no rate over the time nobody watched.
        self._generation += 1
        self._last = b""  # stale by the time a page comes back
        self._at = None
        self._totals.clear()
        self._window.clear()

    def _failed(self, failure: Failure) -> None:
        _log.failure("dashboard timer stopped", failure)

    def tick(self) -> Deferred[None] | None:
        """Gather every worker's state and send the snapshot of them."""
        generation = self._generation
        own = self.metrics.state()
        siblings = self.metrics.siblings
        if siblings is None:
            self._publish([own], generation)
            return None
        gathered = siblings.gather().addCallback(
            lambda others: self._publish([own, *others], generation)
        )
        return gathered

    def _publish(self, states: list[State], generation: int) -> None:
        if generation != self._generation:
            return
        try:
            snapshot = self.snapshot(states, self.clock.seconds())
        except Exception:
            _log.failure("dashboard snapshot failed")
            return
        self.history.append(snapshot["point"])
        self._last = _event(b"snapshot", snapshot)
        self.broadcast(self._last)

    # --- the numbers ---

    def snapshot(self, states: list[State], now: float) -> dict[str, Any]:
        """
        ``point`` (what a chart plots at ``now``: rates since the last tick,
        latency percentiles over the window, engine queues), ``totals`` and
        ``recent`` requests, from the raw states of the workers that answered.
        """
        first = self._at is None
        self._at = now
        rates: dict[int, float] = {}
        prompt = generation = 0.0
        ttft: dict[int, int] = {}
        itl: dict[int, int] = {}
        seen = set()
        for state in states:
            name = state["name"]
            totals = Totals.of(state, now)
            before = self._totals.get(name)
            self._totals[name] = totals
            seen.add(name)
            if before is None or not totals.at > before.at:
                continue  # a new worker: this is its baseline
            # Over the worker's own interval: one that missed a tick is averaged over two.
            dt = totals.at - before.at
            for status, n in _minus(totals.requests, before.requests).items():
                rates[status] = rates.get(status, 0.0) + n / dt
            prompt += (totals.prompt - before.prompt) / dt
            generation += (totals.generation - before.generation) / dt
            for i, n in _minus(totals.ttft, before.ttft).items():
                ttft[i] = ttft.get(i, 0) + n
            for i, n in _minus(totals.itl, before.itl).items():
                itl[i] = itl.get(i, 0) + n
        for name in [n for n, t in self._totals.items() if n not in seen and now - t.at > FORGET]:
            del self._totals[name]
        if not first:
            self._window.append((ttft, itl))
        point: dict[str, Any] = {
            "t": now,
            "workers": len(states),
            "requests": None if first else {str(s): _rounded(r) for s, r in sorted(rates.items())},
            "tokens": None if first else [_rounded(prompt), _rounded(generation)],
            "ttft": self._percentiles(0),
            "itl": self._percentiles(1),
            "models": _engines(states),
        }
        return {"point": point, "totals": _totals(states), "recent": _recent(states)}

    def _percentiles(self, which: int) -> list[float] | None:
        """p50, p90, p99 in ms over the window; None when it saw no value."""
        counts: dict[int, int] = {}
        for window in self._window:
            for i, n in window[which].items():
                counts[i] = counts.get(i, 0) + n
        histogram: Histogram = self._layout.of_buckets(counts)
        if not histogram.count:
            return None
        return [_rounded(v * 1000.0) for v in histogram.percentiles(_PERCENTILES)]


def _engines(states: list[State]) -> dict[str, list[int]]:
    """Running and waiting requests per model, summed over the workers."""
    out: dict[str, list[int]] = {}
    for state in states:
        for model, running, waiting, *_kv in state["engines"]:
            both = out.setdefault(model, [0, 0])
            both[0] += running
            both[1] += waiting
    return dict(sorted(out.items()))


def _totals(states: list[State]) -> dict[str, Any]:
    requests = 0
    statuses: dict[int, int] = {}
    kinds: dict[tuple[int, str], int] = {}
    for state in states:
        for endpoint, _model, status, n in state["requests"]:
            if endpoint not in OPS:
                requests += n
                if status >= 400:
                    statuses[status] = statuses.get(status, 0) + n
        for status, kind, n in state["error_kinds"]:
            kinds[status, kind] = kinds.get((status, kind), 0) + n
    prompt = generation = 0.0
    for state in states:
        for model in state["stats"].values():
            histograms = model["histograms"]
            prompt += histograms["prompt_tokens"]["total"]
            generation += histograms["completion_tokens"]["total"] + model["cancelled_tokens"]
    return {
        "requests": requests,
        "errors": {str(s): n for s, n in sorted(statuses.items())},
        # Every error answer, the server's own endpoints' too: [status, kind, count].
        "kinds": [[s, k, n] for (s, k), n in sorted(kinds.items())],
        "prompt_tokens": int(prompt),
        "generation_tokens": int(generation),
    }


def _recent(states: list[State]) -> list[list[Any]]:
    """The latest API requests of every worker, newest first."""
    # Each ring is oldest first: reversed, requests that ended at one instant stay in order.
    entries = [e for state in states for e in reversed(state["recent"]) if e[1] not in OPS]
    entries.sort(key=lambda entry: entry[0], reverse=True)
    return entries[:SHOWN]


def _event(name: bytes, data: object) -> bytes:
    """One SSE event; ujson writes no newline, so one ``data:`` line holds it."""
    body = ujson.dumps(data, escape_forward_slashes=False).encode()
    return b"event: %s\ndata: %s\n\n" % (name, body)


def _asset(name: str) -> str:
    return (resources.files("mockoai.ops") / "assets" / name).read_text("utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _build_page() -> tuple[bytes, bytes]:
    """The page with its script and style inlined, and the policy that allows only them."""
    script, style = _asset("dashboard.js"), _asset("dashboard.css")
    html = _asset("dashboard.html")
    html = html.replace("/*STYLE*/", style).replace("/*SCRIPT*/", script)
    policy = (
        "default-src 'none'; "
        f"script-src {_sha256(script)}; style-src {_sha256(style)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'"
    )
    return html.encode("utf-8"), policy.encode("ascii")
