"""
/metrics: the collector over mockoai's own numbers on a Clock, the state
sharing of --workers, a real twistd scraped over TCP, and two workers
whose every scrape covers both.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mockoai.ops import metrics
from mockoai.ops.observe import Observer, RequestCounts, endpoint_label
from mockoai.ops.siblings import Siblings
from mockoai.ops.stats import Histogram, Stats
from mockoai.pipeline.outcome import Outcome
from mockoai.sim.latency import constant
from tests.support import Client, TwistdProcess, make_service, sse_json

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def chat(stream: bool = False, max_tokens: int = 5, model: str = "m") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }


def _tempdir(case: Any) -> str:
    """A fresh directory, removed after the test (short: unix socket paths are limited)."""
    path = tempfile.mkdtemp(prefix="mockoai-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class _Finished:
    """What Observer.finished reads of a request."""

    def __init__(self, path: bytes, code: int, outcome: Outcome | None) -> None:
        self.path = path
        self.code = code
        self.outcome = outcome


class HistogramExportTests(SynchronousTestCase):
    def test_cumulative_counts_at_bounds(self) -> None:
        h = Histogram()
        for v in (0.0, 0.0005, 0.1, 0.1, 0.2, 5.0, 99999.0):
            h.record(v)
        # Exact at a bound; a bound more than one bucket (2%) below a value excludes it.
        self.assertEqual(h.cumulative([0.001, 0.1, 0.097, 1.0, 10.0]), [2, 4, 2, 5, 6])

    def test_state_round_trip_equals_merge(self) -> None:
        a, b = Stats(), Stats()
        a.for_model("x").completed(0.5, ttft=0.1, prompt_tokens=7, completion_tokens=3)
        b.for_model("x").completed(1.5, ttft=0.3, prompt_tokens=9, completion_tokens=4)
        b.for_model("y").cancel(12)
        b.for_model("y").failed(400)
        merged = Stats().merge(a).merge(b).snapshot()
        loaded = Stats().load(json.loads(json.dumps(a.state())))
        loaded.load(json.loads(json.dumps(b.state())))
        self.assertEqual(loaded.snapshot(), merged)
        self.assertEqual(loaded.for_model("y").cancelled_tokens, 12)

    def test_endpoint_labels_are_bounded(self) -> None:
        self.assertEqual(endpoint_label(b"/v1/chat/completions"), "/v1/chat/completions")
        self.assertEqual(endpoint_label(b"/v1/models/a/b"), "/v1/models/{model}")
        self.assertEqual(
            endpoint_label(b"/api/v1/models/a/b/endpoints"), "/api/v1/models/{model}/endpoints"
        )
        self.assertEqual(endpoint_label(b"/random/path/123"), "other")

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"/v1/chat/completions",
                        b"/health",
                        b"/v1/models/a",
                        b"/x",
                        b"/v1/responses/r",
                    ]
                ),
                st.sampled_from(["", "a", "b", "c"]),
                st.sampled_from([200, 400, 429]),
            ),
            max_size=40,
        )
    )
    def test_observer_counts_as_request_counts_do(
        self, requests: list[tuple[bytes, str, int]]
    ) -> None:
        # Observer.finished counts a series seen before itself: as RequestCounts.add does.
        observed, added = RequestCounts(max_series=5), RequestCounts(max_series=5)
        observer = Observer(observed)
        for path, model, status in requests:
            request = _Finished(path, status, Outcome(model=model) if model else None)
            observer.finished(request)
            added.add(endpoint_label(path), model, status)
        self.assertEqual(observed.counts, added.counts)

    def test_request_counts_cap_series(self) -> None:
        counts = RequestCounts(max_series=2)
        counts.add("/v1/completions", "a", 200)
        counts.add("/v1/completions", "b", 200)
        counts.add("/v1/completions", "c", 200)
        counts.add("/v1/completions", "d", 200)
        self.assertEqual(counts.counts[("/v1/completions", "(other)", 200)], 2)


class CollectorTests(SynchronousTestCase):
    """The exposition of a real service on a Clock moves as requests do."""

    def setUp(self) -> None:
        self.service = make_service(
            models=("m",), response_delay=constant(0.1), itl=constant(0.02), max_running=1
        )
        self.client = Client(self.service)
        self.clock = self.service.clock

    def scrape(self) -> Samples:
        response = self.client.get("/metrics", advance=False)
        self.assertEqual(response.status, 200)
        self.assertEqual(
            response.header("content-type"), "text/plain; version=0.0.4; charset=utf-8"
        )
        return parse(response.body.decode())

    def run_until_idle(self, limit: float = 10.0) -> None:
        end = self.clock.seconds() + limit
        while self.service.site.active and self.clock.seconds() < end:
            self.clock.advance(0.01)

    def test_running_and_waiting_during_a_queued_request(self) -> None:
        first = self.client.send("POST", "/v1/chat/completions", chat(stream=True))
        second = self.client.send("POST", "/v1/chat/completions", chat(stream=True))
        during = self.scrape()
        self.assertEqual(value(during, "vllm:num_requests_running", model_name="m"), 1)
        self.assertEqual(value(during, "vllm:num_requests_waiting", model_name="m"), 1)
        self.assertEqual(value(during, "mockoai_queue_depth", model="m"), 1)
        self.assertEqual(value(during, "vllm:kv_cache_usage_perc", model_name="m"), 1.0)
        # two streams and the scrape itself
        self.assertEqual(value(during, "mockoai_requests_in_flight"), 3)

        self.run_until_idle()
        after = self.scrape()
        self.assertEqual(value(after, "vllm:num_requests_running", model_name="m"), 0)
        self.assertEqual(value(after, "vllm:num_requests_waiting", model_name="m"), 0)
        self.assertEqual(value(after, "vllm:kv_cache_usage_perc", model_name="m"), 0)
        usages = [sse_json(c.response().body)[-1]["usage"] for c in (first, second)]
        self.assertEqual(
            value(after, "vllm:prompt_tokens_total", model_name="m"),
            sum(u["prompt_tokens"] for u in usages),
        )
        self.assertEqual(value(after, "vllm:generation_tokens_total", model_name="m"), 10)
        self.assertEqual(
            value(after, "vllm:request_success_total", model_name="m", finished_reason="length"), 2
        )
        self.assertEqual(value(after, "vllm:e2e_request_latency_seconds_count", model_name="m"), 2)
        # The second waited for the first: 0.1 s + 4 steps of 0.02 s.
        queue = "vllm:request_queue_time_seconds"
        self.assertAlmostEqual(value(after, f"{queue}_sum", model_name="m"), 0.18, places=6)
        self.assertEqual(value(after, f"{queue}_bucket", model_name="m", le="0.3"), 2)
        ttft = "vllm:time_to_first_token_seconds"
        self.assertEqual(value(after, f"{ttft}_bucket", model_name="m", le="0.1"), 1)
        self.assertEqual(value(after, f"{ttft}_bucket", model_name="m", le="0.25"), 1)
        self.assertEqual(value(after, f"{ttft}_bucket", model_name="m", le="0.5"), 2)
        # 4 gaps per 5-token stream, under both names vLLM has used.
        for name in ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"):
            self.assertEqual(value(after, f"{name}_count", model_name="m"), 8)
            self.assertEqual(value(after, f"{name}_bucket", model_name="m", le="0.025"), 8)
            self.assertEqual(value(after, f"{name}_bucket", model_name="m", le="0.01"), 0)
        self.assertEqual(
            value(
                after,
                "mockoai_requests_total",
                endpoint="/v1/chat/completions",
                model="m",
                status="200",
            ),
            2,
        )

    def test_vllm_bucket_boundaries(self) -> None:
        self.client.post("/v1/chat/completions", chat())
        samples = self.scrape()
        for name, bounds in (
            ("vllm:time_to_first_token_seconds", metrics.VLLM_TTFT_BUCKETS),
            ("vllm:inter_token_latency_seconds", metrics.VLLM_ITL_BUCKETS),
            ("vllm:e2e_request_latency_seconds", metrics.VLLM_REQUEST_BUCKETS),
            ("vllm:request_queue_time_seconds", metrics.VLLM_REQUEST_BUCKETS),
        ):
            les = sorted(
                float(dict(labels)["le"])
                for (sample, labels) in samples
                if sample == f"{name}_bucket"
            )
            self.assertEqual(les, [*bounds, float("inf")])
        self.assertEqual(len(metrics.VLLM_TTFT_BUCKETS), 22)
        self.assertEqual(len(metrics.VLLM_ITL_BUCKETS), 19)
        self.assertEqual(len(metrics.VLLM_REQUEST_BUCKETS), 21)

    def test_statuses_endpoints_and_disconnects(self) -> None:
        self.client.get("/v1/models")
        self.client.get("/v1/models/nope")
        self.client.post("/v1/chat/completions", {"model": "m"})
        stream = self.client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=50))
        self.clock.advance(0.15)  # the first tokens are out
        stream.disconnect()
        plain = self.client.send("POST", "/v1/chat/completions", chat(max_tokens=50))
        self.clock.advance(0.05)
        plain.disconnect()
        self.run_until_idle()
        samples = self.scrape()

        def requests(endpoint: str, model: str, status: str) -> float:
            return value(
                samples, "mockoai_requests_total", endpoint=endpoint, model=model, status=status
            )

        self.assertEqual(requests("/v1/models", "", "200"), 1)
        self.assertEqual(requests("/v1/models/{model}", "", "404"), 1)
        self.assertEqual(requests("/v1/chat/completions", "", "400"), 1)
        self.assertEqual(requests("/v1/chat/completions", "m", "200"), 1)  # the stream
        self.assertEqual(requests("/v1/chat/completions", "m", "499"), 1)  # left unanswered
        self.assertEqual(value(samples, "mockoai_client_disconnects_total", model="m"), 2)
        self.assertEqual(
            value(samples, "vllm:request_success_total", model_name="m", finished_reason="abort"),
            2,
        )
        # The stream's first tokens count as generated, as vLLM counts them.
        self.assertGreaterEqual(value(samples, "vllm:generation_tokens_total", model_name="m"), 1)
        self.assertEqual(value(samples, "mockoai_requests_in_flight"), 1)  # the scrape

    def test_kv_usage_from_tokens_held(self) -> None:
        service = make_service(
            models=("m",), itl=constant(0.02), max_running=4, kv_cache_tokens=100
        )
        client = Client(service)
        client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=20))
        service.clock.advance(0.001)  # prefilled: the first token is out
        samples = parse(client.get("/metrics", advance=False).body.decode())
        held = service.core.engines()[0].kv_tokens()
        self.assertGreater(held, 1)
        self.assertAlmostEqual(
            value(samples, "vllm:kv_cache_usage_perc", model_name="m"), held / 100
        )
        service.clock.advance(0.02 * 5)
        samples = parse(client.get("/metrics", advance=False).body.decode())
        self.assertAlmostEqual(
            value(samples, "vllm:kv_cache_usage_perc", model_name="m"), (held + 5) / 100
        )

    def test_model_without_engine_counts_in_flight_as_running(self) -> None:
        service = make_service(models=("m",), response_delay=constant(1.0))
        client = Client(service)
        client.send("POST", "/v1/chat/completions", chat())
        samples = parse(client.get("/metrics", advance=False).body.decode())
        self.assertEqual(value(samples, "vllm:num_requests_running", model_name="m"), 1)
        service.clock.advance(1.0)
        samples = parse(client.get("/metrics", advance=False).body.decode())
        self.assertEqual(value(samples, "vllm:num_requests_running", model_name="m"), 0)

    def test_stats_says_how_many_workers(self) -> None:
        self.client.post("/v1/chat/completions", chat())
        body = self.client.get("/stats").json()
        self.assertEqual(body["workers"], 1)
        self.assertEqual(body["models"]["m"]["completed"], 1)


class SiblingTests(TestCase):
    """Workers read each other's state over unix sockets (real reactor, one process)."""

    def test_gather_and_merge(self) -> Any:
        from twisted.internet import reactor

        run_dir = _tempdir(self)
        services = [make_service(models=("m",)) for _ in range(3)]
        siblings = []
        for index, service in enumerate(services):
            for _ in range(index + 1):
                Client(service).post("/v1/chat/completions", chat())
            api = service.api
            sibling = Siblings(reactor, run_dir, index, api.metrics.state)
            api.metrics.siblings = sibling
            sibling.startService()
            self.addCleanup(sibling.stopService)
            siblings.append(sibling)
        # A stale socket of a dead worker is skipped, not waited for.
        open(os.path.join(run_dir, "worker-9.sock"), "w").close()

        def check(body: bytes) -> None:
            samples = parse(body.decode())
            self.assertEqual(value(samples, "mockoai_workers"), 3)
            self.assertEqual(
                value(
                    samples,
                    "mockoai_requests_total",
                    endpoint="/v1/chat/completions",
                    model="m",
                    status="200",
                ),
                1 + 2 + 3,
            )
            self.assertEqual(
                value(samples, "vllm:e2e_request_latency_seconds_count", model_name="m"), 6
            )

        return services[1].api.metrics.exposition().addCallback(check)


def _get(port: int, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers (looked up case-insensitively: twisted.web capitalizes them), body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("x-request-id") or ""
    finally:
        connection.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class EndToEndTests(SynchronousTestCase):
    def test_scrape_a_real_server(self) -> None:
        server = TwistdProcess(["--articles", "64", "--max-running", "8", "--itl", "1"])
        self.addCleanup(server.cleanup)
        server.start()
        for _ in range(3):
            status, _ = _post(server.port, "/v1/chat/completions", chat(model="gpt-4o"))
            self.assertEqual(status, 200)
        status, headers, body = _get(server.port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        samples = parse(body.decode())
        self.assertEqual(
            value(
                samples, "vllm:request_success_total", model_name="gpt-4o", finished_reason="length"
            ),
            3,
        )
        self.assertEqual(value(samples, "vllm:generation_tokens_total", model_name="gpt-4o"), 15)
        # 4 steps of 1 ms between 5 tokens, within the reactor's timing.
        itl = "vllm:inter_token_latency_seconds"
        self.assertEqual(value(samples, f"{itl}_count", model_name="gpt-4o"), 12)
        self.assertEqual(value(samples, f"{itl}_bucket", model_name="gpt-4o", le="0.5"), 12)
        self.assertEqual(value(samples, "vllm:num_requests_running", model_name="gpt-4o"), 0)
        server.stop()


class WorkersTests(SynchronousTestCase):
    """Two SO_REUSEPORT workers: any scrape covers both."""

    def test_every_scrape_covers_both_workers(self) -> None:
        server = TwistdProcess(["--workers", "2", "--articles", "64"])
        workers: list[int] = []
        self.addCleanup(server.cleanup)
        self.addCleanup(lambda: _kill(workers))
        server.start()
        assert server.process is not None
        deadline = time.monotonic() + 20
        while server.stdout.count("ready in") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers.extend(_children(server.process.pid))
        self.assertEqual(len(workers), 2)

        served_by = set()
        for _ in range(40):
            status, request_id = _post(server.port, "/v1/chat/completions", chat(model="gpt-4o"))
            self.assertEqual(status, 200)
            served_by.add(request_id[4:24])  # each process has its own id prefix
        self.assertEqual(len(served_by), 2, "both workers answered")

        # The kernel picks a worker per connection by a hash: twelve scrapes all
        # went to one once (a 1-in-2,048 chance); with 24, 1 in 8 million.
        scraped_by = set()
        for _ in range(24):
            status, headers, body = _get(server.port, "/metrics")
            self.assertEqual(status, 200)
            scraped_by.add(headers["x-request-id"][4:24])
            samples = parse(body.decode())
            self.assertEqual(value(samples, "mockoai_workers"), 2)
            self.assertEqual(
                value(
                    samples,
                    "mockoai_requests_total",
                    endpoint="/v1/chat/completions",
                    model="gpt-4o",
                    status="200",
                ),
                40,
            )
            self.assertEqual(
                value(samples, "vllm:e2e_request_latency_seconds_count", model_name="gpt-4o"), 40
            )
        self.assertEqual(len(scraped_by), 2, "scrapes reached both workers")
        status, _, body = _get(server.port, "/stats")
        stats = json.loads(body)
        self.assertEqual((stats["workers"], stats["models"]["gpt-4o"]["completed"]), (2, 40))

        with open(f"/proc/{workers[0]}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        run_dir = argv[argv.index("--worker-dir") + 1]
        sockets = sorted(name for name in os.listdir(run_dir) if name.endswith(".sock"))
        # Per worker: its state for scrapes, and its answers to the others' questions.
        self.assertEqual(sockets, ["ask-0.sock", "ask-1.sock", "worker-0.sock", "worker-1.sock"])
        self.assertEqual(server.stop(timeout=30), 0)
        for pid in workers:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still running")
        self.assertFalse(os.path.exists(run_dir), "the run directory is removed")
