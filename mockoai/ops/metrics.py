# -*- test-case-name: tests.test_metrics -*-
"""
``GET /metrics``: Prometheus text exposition, mockoai's own series and the
vLLM series gateways, autoscalers and dashboards read.

Nothing is recorded for Prometheus on the request path.  The numbers are
the ones mockoai keeps anyway -- each model's L{ModelStats} (log-bucket
histograms, counters), the engines' running and waiting sequences, the
site's in-flight count, and the per-endpoint L{RequestCounts} of the finish
hook -- and a prometheus_client collector turns them into metric families
when scraped.  Histograms are re-bucketed to fixed boundaries then (vLLM's
own for the ``vllm:`` series), exact to the 1% precision of ours.  With
``--workers`` the raw state of every sibling is merged in first
(L{mockoai.ops.siblings}), so any worker's scrape covers them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Union

import ujson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred

from mockoai.ops.observe import RequestCounts, recent_ring, recent_state
from mockoai.ops.stats import Histogram, ModelStats, Stats
from mockoai.pipeline.control import FaultCounts

if TYPE_CHECKING:
    from mockoai.ops.siblings import Siblings
    from mockoai.sim.core import Core

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
VLLM_REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
#: mockoai's own latency buckets: a mock answers in microseconds to minutes.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

State = dict[str, Any]
Body = Union[bytes, "Deferred[bytes]"]


class Metrics:
    """This process's numbers (merged with its siblings' when there are any), rendered."""

    def __init__(self, core: Core, stats: Stats) -> None:
        self.core = core
        #: Each model's numbers, recorded on the request path.
        self.stats = stats
        self.counts = RequestCounts()
        #: The latest requests, for the dashboard (fed by the finish hook too).
        self.recent = recent_ring()
        #: Tells this process's numbers from its siblings' (and a restarted one's).
        self.name = f"{os.getpid()}-{id(self):x}"
        #: The site, for the in-flight count (set when the service is built).
        self.site: Any = None
        self.siblings: Siblings | None = None
        #: Faults applied by kind, model and rule (L{mockoai.pipeline.control}).
        self.faults = FaultCounts()

    def state(self) -> State:
        """This process's raw numbers, JSON-able."""
        return {
            "stats": self.stats.state(),
            "requests": self.counts.state(),
            "in_flight": self.site.active if self.site is not None else 0,
            "engines": engine_state(self.core, self.stats),
            "name": self.name,
            "recent": recent_state(self.recent),
            "error_kinds": self.counts.kinds_state(),
            "faults": self.faults.state(),
        }

    def clear(self) -> None:
        """Every number back to nothing (``POST /_mockoai/reset``)."""
        self.stats.clear()
        self.counts.counts.clear()
        self.counts.kinds.clear()
        self.recent.clear()
        self.faults.clear()

    def _gathered(self, render: Any) -> Body:
        own = self.state()
        if self.siblings is None:
            return render([own])  # type: ignore[no-any-return]
        return self.siblings.gather().addCallback(lambda others: render([own, *others]))

    def exposition(self) -> Body:
        """The text exposition of every worker's numbers."""
        return self._gathered(exposition)

    def stats_body(self) -> Body:
        """The /stats document of every worker's numbers."""
        return self._gathered(stats_body)


def engine_state(core: Core, stats: Stats) -> list[tuple[str, int, int, int, int]]:
    """
    (model, running, waiting, kv held, kv capacity) per served model.  With
    no engine a model's running requests are those in flight and its KV
    usage is 0.  KV is tokens held / ``--kv-cache-tokens``, or (without it)
    running sequences / ``--max-running``.
    """
    out = []
    seen = set()
    kv_tokens = core.settings.observability.kv_cache_tokens
    for engine in core.engines():
        if id(engine) in seen:
            continue
        seen.add(id(engine))
        if kv_tokens:
            held, capacity = min(engine.kv_tokens(), kv_tokens), kv_tokens
        else:
            held, capacity = engine.running_count, engine.config.max_running
        out.append((engine.model, engine.running_count, engine.waiting_count, held, capacity))
    engined = {row[0] for row in out}
    for name, model_stats in stats.items():
        if name not in engined:
            out.append((name, in_flight(model_stats), 0, 0, 0))
    return out


def in_flight(stats: ModelStats) -> int:
    """Requests arrived and not yet answered, refused or abandoned."""
    ended = stats.e2e.count + sum(stats.errors.values()) + stats.cancelled
    return max(0, stats.requests - ended)


def merge(states: list[State]) -> tuple[Stats, RequestCounts, int, dict[str, list[int]]]:
    stats, counts, active = Stats(), RequestCounts(), 0
    engines: dict[str, list[int]] = {}
    for state in states:
        stats.load(state["stats"])
        counts.load(state["requests"])
        active += state["in_flight"]
        for model, *numbers in state["engines"]:
            total = engines.setdefault(model, [0, 0, 0, 0])
            for i, n in enumerate(numbers):
                total[i] += n
    return stats, counts, active, engines


def exposition(states: list[State]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(states))
    return generate_latest(registry)


def stats_body(states: list[State]) -> bytes:
    stats = merge(states)[0]
    faults = [
        {"kind": kind, "model": model, "rule": rule, "count": n}
        for (kind, model, rule), n in sorted(merged_faults(states).counts.items())
    ]
    return ujson.dumps(
        {"models": stats.snapshot(), "workers": len(states), "faults": faults}
    ).encode()


def merged_faults(states: list[State]) -> FaultCounts:
    """Every worker's fault counters, summed (a state from before they existed has none)."""
    faults = FaultCounts()
    for state in states:
        faults.load(state.get("faults", []))
    return faults


def _histogram(
    family: HistogramMetricFamily, labels: list[str], h: Histogram, bounds: tuple[float, ...]
) -> None:
    cumulative = h.cumulative(list(bounds))
    buckets = [(floatToGoString(b), n) for b, n in zip(bounds, cumulative)]
    buckets.append(("+Inf", h.count))
    family.add_metric(labels, buckets, h.total)


class _Collector:
    """The metric families of merged worker states (one per scrape)."""

    def __init__(self, states: list[State]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        stats, counts, active, engines = merge(self.states)
        models = stats.items()
        yield from self._mockoai(stats, counts, active, engines, models)
        yield from self._vllm(engines, models)

    def _mockoai(
        self,
        stats: Stats,
        counts: RequestCounts,
        active: int,
        engines: dict[str, list[int]],
        models: list[tuple[str, ModelStats]],
    ) -> Iterator[Metric]:
        workers = GaugeMetricFamily("mockoai_workers", "Worker processes in this scrape.")
        workers.add_metric([], len(self.states))
        yield workers
        requests = CounterMetricFamily(
            "mockoai_requests",
            "Finished requests by endpoint, model and HTTP status (499: the client left first).",
            labels=["endpoint", "model", "status"],
        )
        for (endpoint, model, status), n in sorted(counts.counts.items()):
            requests.add_metric([endpoint, model, str(status)], n)
        yield requests
        in_flight = GaugeMetricFamily("mockoai_requests_in_flight", "Requests being answered.")
        in_flight.add_metric([], active)
        yield in_flight
        queue = GaugeMetricFamily(
            "mockoai_queue_depth", "Requests waiting for the engine.", labels=["model"]
        )
        for model, (_running, waiting, _held, _capacity) in sorted(engines.items()):
            queue.add_metric([model], waiting)
        yield queue
        for name, doc in (
            ("ttft", "Time to first token"),
            ("itl", "Time between tokens (per token)"),
            ("e2e", "Time to the last byte"),
            ("queue", "Time queued for the engine"),
        ):
            family = HistogramMetricFamily(
                f"mockoai_{name}_seconds", f"{doc}, in seconds.", labels=["model"]
            )
            for model, s in models:
                _histogram(family, [model], getattr(s, name), LATENCY_BUCKETS)
            yield family
        counters = (
            ("prompt_tokens", "Prompt tokens of answered requests.", _prompt_tokens),
            ("completion_tokens", "Completion tokens sent.", _generation_tokens),
            ("client_disconnects", "Requests the client abandoned.", _cancelled),
            ("rejected", "Requests refused by admission control.", _rejected),
        )
        for name, doc, value in counters:
            counter = CounterMetricFamily(f"mockoai_{name}", doc, labels=["model"])
            for model, s in models:
                counter.add_metric([model], value(s))
            yield counter
        errors = CounterMetricFamily(
            "mockoai_errors", "Error answers by model and status.", labels=["model", "status"]
        )
        for model, s in models:
            for status, n in sorted(s.errors.items()):
                errors.add_metric([model, str(status)], n)
        yield errors
        faults = CounterMetricFamily(
            "mockoai_faults",
            "Faults, scripted answers and latency overrides applied by rules or control "
            "headers, by kind, model and rule (rule=header: a control header).",
            labels=["kind", "model", "rule"],
        )
        for (kind, model, rule), n in sorted(merged_faults(self.states).counts.items()):
            faults.add_metric([kind, model, rule], n)
        yield faults

    def _vllm(
        self, engines: dict[str, list[int]], models: list[tuple[str, ModelStats]]
    ) -> Iterator[Metric]:
        label = ["model_name"]
        running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=label,
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=label
        )
        kv = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=label
        )
        gpu = GaugeMetricFamily(
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage. "
            "DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            labels=label,
        )
        for model, (n_running, n_waiting, held, capacity) in sorted(engines.items()):
            running.add_metric([model], n_running)
            waiting.add_metric([model], n_waiting)
            usage = min(1.0, held / capacity) if capacity else 0.0
            kv.add_metric([model], usage)
            gpu.add_metric([model], usage)
        yield from (running, waiting, kv, gpu)
        for name, doc, value in (
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", _prompt_tokens),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                _generation_tokens,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=label)
            for model, s in models:
                family.add_metric([model], value(s))
            yield family
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*label, "finished_reason"],
        )
        for model, s in models:
            finished = {"stop": 0, "length": 0, **s.finished, "abort": s.cancelled}
            for reason, n in sorted(finished.items()):
                success.add_metric([model, reason], n)
        yield success
        for name, doc, attribute, bounds in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
             "ttft", VLLM_TTFT_BUCKETS),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
             "itl", VLLM_ITL_BUCKETS),
            ("vllm:time_per_output_token_seconds",
             "Histogram of time per output token in seconds (the older name of "
             "vllm:inter_token_latency_seconds).", "itl", VLLM_ITL_BUCKETS),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
             "e2e", VLLM_REQUEST_BUCKETS),
            ("vllm:request_queue_time_seconds",
             "Histogram of time spent in WAITING phase for request.", "queue",
             VLLM_REQUEST_BUCKETS),
        ):  # fmt: skip
            histogram = HistogramMetricFamily(name, doc, labels=label)
            for model, s in models:
                _histogram(histogram, [model], getattr(s, attribute), bounds)
            yield histogram


def _prompt_tokens(s: ModelStats) -> float:
    return s.prompt_tokens.total


def _generation_tokens(s: ModelStats) -> float:
    return s.completion_tokens.total + s.cancelled_tokens


def _cancelled(s: ModelStats) -> float:
    return s.cancelled


def _rejected(s: ModelStats) -> float:
    return s.rejected
