# -*- test-case-name: tests.test_e2e -*-
"""
The service tree, assembled in one place: core, routes, site, listeners,
and the shutdown drain.

    MockoaiService (drains on stop)
      +- strports service per --listen endpoint -> MockSite -> Router -> MockOAI routes
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Mapping
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from mockoai import __version__
from mockoai.dialects.anthropic import errors as anthropic_errors
from mockoai.dialects.anthropic.dialect import Anthropic
from mockoai.dialects.openai.dialect import OpenAI
from mockoai.dialects.openrouter import errors as openrouter_errors
from mockoai.dialects.openrouter.api import OpenRouter
from mockoai.dialects.openrouter.dialect import KEY_REFUSALS
from mockoai.ops.admin import TOPIC, Admin
from mockoai.ops.config import JOURNAL_AUTO, Settings, describe
from mockoai.ops.journal import Journal
from mockoai.ops.observe import Observer
from mockoai.ops.requestlog import RequestLog, worker_path
from mockoai.ops.siblings import Siblings
from mockoai.ops.stats import Stats
from mockoai.ops.workers import ReusePortService, clean_exit
from mockoai.pipeline import faults
from mockoai.pipeline.control import Control
from mockoai.pipeline.errors import Envelopes, draining
from mockoai.pipeline.gate import Gate
from mockoai.pipeline.generate import Pipeline
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.rules import EMPTY as NO_RULES
from mockoai.pipeline.rules import compile_file
from mockoai.routes import MockOAI
from mockoai.sim.core import Core
from mockoai.wire import cors
from mockoai.wire.dispatch import Router
from mockoai.wire.heap import HEAP
from mockoai.wire.http2 import factory_for
from mockoai.wire.poll import LeanPollService
from mockoai.wire.site import MockSite

_log = Logger(namespace="mockoai")

#: The cyclic GC's thresholds once serving (CPython's are 700, 10, 10).  The
#: request path leaves no cycles (streams are freed by refcounting), yet the
#: GC runs on allocation counts alone: under 800 paced streams the defaults
#: paused the reactor up to 14 ms (gen 0), 32 ms (gen 1) and 24 ms (gen 2)
#: within 10 s; with these, not once.  Cycles from errors (tracebacks) are
#: still collected young, after 10,000 net allocations.
GC_THRESHOLDS = (10_000, 20, 100)


class MockoaiService(MultiService):
    """Owns the site; on stop, drains in-flight requests within the grace period."""

    def __init__(
        self, settings: Settings, core: Core, api: MockOAI, site: MockSite, clock: Any
    ) -> None:
        super().__init__()
        self.settings = settings
        self.core = core
        self.api = api
        self.site = site
        self.clock = clock
        #: --request-log: closed (flushed) once the drain is over.
        self.request_log: RequestLog | None = None

    def startService(self) -> None:
        super().startService()
        corpus = self.core.corpus
        settings = self.settings
        _log.info(
            "mockoai {version} listening on {endpoints}",
            version=__version__,
            endpoints=", ".join(settings.server.listen),
        )
        _log.info(
            "models: {models}{any}",
            models=", ".join(m.id for m in settings.served.models),
            any=" (and any other name: --any-model)" if settings.served.any_model else "",
        )
        _log.info(
            "corpus: {articles} articles, {tokens} tokens, {size:.1f} MB, built in {secs:.2f} s",
            articles=corpus.articles,
            tokens=corpus.tokens,
            size=len(corpus.data) / 1e6,
            secs=corpus.build_seconds,
        )
        _log.info("config: {config}", config=describe(settings))
        advice = gc_advice(os.environ)
        if advice is not None:
            _log.info("{advice}", advice=advice)
        settle_heap()
        _log.info("ready in {secs:.2f} s, RSS {rss:.1f} MB", secs=process_age(), rss=rss_mb())

    def stopService(self) -> Deferred[Any]:
        site = self.site
        site.draining = self.api.draining = True
        _log.info(
            "draining {n} in-flight request(s), grace period {grace:g} s",
            n=site.active,
            grace=self.settings.server.grace_period,
        )
        stopped_listening = super().stopService()
        for channel in list(site.channels):
            if not channel.busy:
                _close(channel)

        drained: Deferred[None] = Deferred()
        timer = self.clock.callLater(self.settings.server.grace_period, _fire, drained)

        def finished() -> None:
            if timer.active() and any(c.busy for c in site.channels):
                # A request pipelined behind the last answer is next in line
                # (for its 503): the grace period is not over, so wait for it.
                self.clock.callLater(_RECHECK, site.when_idle, finished)
                return
            if timer.active():
                timer.cancel()
            _fire(drained)

        site.when_idle(finished)

        def close_rest(_: object) -> Deferred[None]:
            # Streams still running end as a fault's cut ends them, on their
            # dialect's error event ("shutting down"), and their connections
            # close cleanly below: not a reset, which no client can tell from
            # a network failure.  Those still queued first: ending one that
            # runs would admit them.
            streams = sorted(self.api.streams, key=lambda stream: stream.started)
            if streams:
                _log.warn("grace period over: ending {n} stream(s)", n=len(streams))
                for stream in streams:
                    faults.cut_now(stream, draining())
            left = [c for c in site.channels if c.busy]
            if left:
                _log.warn("grace period over: closing {n} connection(s)", n=len(left))
            for channel in list(site.channels):
                if channel.busy:
                    channel.transport.abortConnection()
                else:
                    # Answered in full: close once the last bytes (a stream's
                    # [DONE]) are sent; an abort would drop what is buffered.
                    _close(channel)
            for pacer in self.core.pacers():
                pacer.stop()
            site.header_deadlines.stop()
            site.body_deadlines.stop()
            site.idle.stop()
            site.large_bodies.stop()
            closed: Deferred[None] = Deferred()
            _when_closed(self.clock, site, closed, self.clock.seconds() + _FLUSH_TIMEOUT)
            return closed

        def stopped(_: object) -> None:
            clean_exit(self.clock)
            if self.request_log is not None:
                try:
                    self.request_log.close()
                except Exception:
                    # A full disk or a lost file costs the log's last lines,
                    # not the summary, the "stopped" line or a clean exit.
                    _log.failure(
                        "closing the request log {path} failed",
                        path=self.request_log.path,
                        level=LogLevel.error,
                    )
            for line in self.api.metrics.stats.summary_lines():
                _log.info("{line}", line=line)
            _log.info("stopped")

        drained.addCallback(close_rest)
        drained.addCallback(stopped)
        return gatherResults([stopped_listening, drained])


#: Seconds closed connections get to flush their last bytes at shutdown.
_FLUSH_TIMEOUT = 1.0
#: Seconds between looks at a drain's busy connections once no request is in flight.
_RECHECK = 0.05


def _when_closed(clock: Any, site: MockSite, closed: Deferred[None], deadline: float) -> None:
    """
    Fire ``closed`` once every connection is gone (the reactor would cut off
    unsent data when it shuts down), aborting stragglers at ``deadline``.
    """
    if site.channels and clock.seconds() < deadline:
        clock.callLater(0.01, _when_closed, clock, site, closed, deadline)
        return
    for channel in list(site.channels):
        channel.transport.abortConnection()
    closed.callback(None)


def _close(channel: Any) -> None:
    """Close once what is answered is sent (HTTP/2 says GOAWAY and waits for its streams)."""
    close = getattr(channel, "close_gracefully", None)
    if close is not None:
        close()
    else:
        channel.transport.loseConnection()


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


def build(
    settings: Settings,
    reactor: IReactorTime | None = None,
    reuseport: bool = False,
    worker: int | None = None,
    run_dir: str | None = None,
) -> MockoaiService:
    """
    The whole object graph for ``settings``; ``reuseport`` when this is one
    of several --workers sharing the TCP ports (``worker`` is its index,
    ``run_dir`` where the workers find each other).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert reactor is not None
    core = Core(settings, reactor)
    ids = IdMaker()
    # The APIs: OpenAI's at /v1, OpenRouter's at /api/v1, Anthropic's at /v1/messages
    # (those two with their own 401s and envelopes).
    openrouter = OpenRouter(core, ids, settings)
    anthropic = Anthropic(core, ids, settings)
    gate = Gate.from_settings(
        settings,
        core.planner,
        reactor,
        [
            (openrouter_errors.PREFIX, KEY_REFUSALS),
            (anthropic_errors.PREFIX, anthropic_errors.KEY_REFUSALS),
        ],
    )
    api = MockOAI(core, Stats(), gate, OpenAI(core, ids, settings), openrouter, anthropic)
    site = MockSite(
        api.app.resource(),  # type: ignore[arg-type]
        Router(api.app),
        reactor,
        ids,
        settings.server.max_body_size,
        settings.server.idle_timeout,
        settings.observability.access_log,
        http=settings.server.http,
        max_connections=settings.server.max_connections,
        http_limits=settings.http_limits,
    )
    site.auth = gate.auth
    site.cors = cors.from_settings(settings.cors)
    site.keepalive_requests = settings.server.keepalive_requests
    site.keepalive_time = settings.server.keepalive_time
    # The error envelope of each API, for the wire's refusals and Klein's handler.
    site.envelopes = api.envelopes = Envelopes(
        prefixes=[
            (openrouter_errors.PREFIX, openrouter_errors.body),
            (anthropic_errors.PREFIX, anthropic_errors.envelope),
        ]
    )
    top = MockoaiService(settings, core, api, site, reactor)
    if settings.server.lean_poll:
        # Before the listeners: every connection finds the site's batch.
        LeanPollService(reactor, site).setServiceParent(top)
    _observe(top, worker, run_dir)
    _control(top, worker)
    siblings = api.metrics.siblings
    if siblings is not None and worker is not None:
        # A stored response lives in the worker that made it; the others ask it.
        siblings.answers["responses"] = api.responses.store.answer

        def ask(index: int, question: str, subject: str) -> Deferred[Any]:
            return siblings.ask(index, "responses", question, subject)

        api.responses.join(worker, ask)
    for description in map(with_backlog, settings.server.listen):
        if reuseport:
            ReusePortService(description, site, reactor).setServiceParent(top)
        else:
            factory = factory_for(description, site, settings.server.http2)
            strports.service(description, factory).setServiceParent(top)
    return top


#: Listen backlog unless an endpoint string sets one.  Twisted's default, 50,
#: makes the kernel drop SYNs when a load tool opens hundreds of connections at
#: once; the client retries after 1, 3, 7 s, which skews every first request.
BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=`` added for TCP and TLS listeners that lack one."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={BACKLOG}"
    return description


def _observe(top: MockoaiService, worker: int | None, run_dir: str | None) -> None:
    """The finish hook, the request log, and (with --workers) the siblings' numbers."""
    settings, metrics, clock = top.settings, top.api.metrics, top.clock
    metrics.site = top.site
    logs = settings.observability
    if logs.request_log:
        top.request_log = RequestLog(
            worker_path(logs.request_log, worker),
            clock,
            logs.request_log_max_size,
            logs.request_log_files,
        )
        top.request_log.setServiceParent(top)
    top.site.observer = Observer(metrics.counts, top.request_log, metrics.recent, clock)
    top.api.dashboard.setServiceParent(top)  # its streams end when the drain begins
    if run_dir is not None and worker is not None:
        metrics.siblings = Siblings(clock, run_dir, worker, metrics.state)
        metrics.siblings.setServiceParent(top)


def _control(top: MockoaiService, worker: int | None) -> None:
    """
    Rules and control headers over every generation pipeline, the journal
    (kept while they are in force, or as ``--journal`` says), the admin API.
    """
    settings, api, clock = top.settings, top.api, top.clock
    faults = settings.faults
    found = faults.rules
    control = Control(
        clock,
        top.core.planner,
        NO_RULES if found is None else compile_file(found.path, found.document),
        faults.allow_control_headers,
        api.metrics.faults,
    )
    # Every pipeline of the route table, whatever its API: one place decides for all.
    control.install([p.dialect for p in vars(api).values() if isinstance(p, Pipeline)])
    journal = Journal(clock, faults.journal_size, faults.journal_bodies, worker or 0)
    observer = top.site.observer
    assert observer is not None  # set by _observe
    mode = faults.journal

    def follow(active: bool) -> None:
        keep = mode == "on" or (mode == JOURNAL_AUTO and active)
        observer.journal = journal if keep else None

    control.on_change.append(follow)
    follow(control.active)
    if found is not None:
        _log.info("rules: {rules}", rules=control.book)
    admin = api.admin = Admin(
        top.core,
        control,
        journal,
        api.metrics,
        api.gate.limits,
        faults.admin_key,
        bool(settings.auth.all_keys),
    )
    siblings = api.metrics.siblings
    if siblings is not None and worker is not None:
        admin.worker = worker
        admin.siblings = siblings
        siblings.answers[TOPIC] = admin.answer


def settle_heap() -> None:
    """
    Ready to serve: everything allocated so far lives until exit, so keep
    the cyclic GC from walking it on every collection (it drives the latency
    tail), collect less often from now on, and hand the corpus build's freed
    scratch memory back to the OS (glibc keeps ~17 MB of it otherwise).
    """
    gc.collect()
    if hasattr(gc, "freeze"):  # CPython; PyPy's GC has no such need
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    HEAP.trim()


def gc_advice(environ: Mapping[str, str], runtime: str = "") -> str | None:
    """
    Under PyPy with its default 1 MB nursery, the setting that halves its
    latency tail: the nursery is sized when the interpreter starts, from the
    environment, so only whoever starts mockoai can set it.
    """
    if (runtime or platform.python_implementation()) != "PyPy" or environ.get("PYPY_GC_NURSERY"):
        return None
    return (
        f"PyPy's GC nursery is its default 1 MB: with PYPY_GC_NURSERY={PYPY_NURSERY} in the "
        "environment chat's p99 at 64 connections was under half, with an eighth of the GC time "
        "(README, Performance)"
    )


#: The PyPy nursery size the README measures (PYPY_GC_NURSERY).
PYPY_NURSERY = "64M"


def rss_mb() -> float:
    """Resident set size now, from /proc (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_age() -> float:
    """Seconds since this process started (interpreter start-up included)."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
        return up - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.process_time()
