"""
/_mockoai/dashboard: the page, its event stream's framing, snapshots whose
numbers match what was served, one timer per process that stops with the
last page, the bounded ring of latest requests, merged figures across
workers (in memory, over real unix sockets, and from a real ``--workers 2``
server), and headless Chromium drawing changing charts while load runs.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from mockoai.ops import dashboard as dashboard_module
from mockoai.ops.config import ApiKey
from mockoai.ops.dashboard import HISTORY, SHOWN, Dashboard
from mockoai.ops.observe import RECENT, endpoint_label
from mockoai.ops.siblings import Siblings
from mockoai.ops.stats import Histogram
from mockoai.sim.latency import constant
from tests.browser import Browser, find_chromium
from tests.support import (
    REPO_ROOT,
    Client,
    Connection,
    TwistdProcess,
    make_service,
    parse_responses,
)
from tests.test_tls import H2Client, make_cert_pair, run, tls_connect

PAGE = "/_mockoai/dashboard"
EVENTS = "/_mockoai/dashboard/events"
KEY = "sk-dashboard-test-000000"


def chat(model: str = "m", stream: bool = False, max_tokens: int = 5) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


def events(body: bytes) -> list[tuple[str, Any]]:
    """
    The events of a dashboard stream, checking its framing strictly: a
    ``retry`` first, then blocks of one ``event:`` and one ``data:`` line
    (JSON), each ended by a blank line.
    """
    text = body.decode("utf-8")
    if not text.endswith("\n\n"):
        raise AssertionError(f"stream does not end with a blank line: {text[-80:]!r}")
    blocks = text[:-2].split("\n\n")
    if blocks[0] != "retry: 2000":
        raise AssertionError(f"no retry first: {blocks[0]!r}")
    out = []
    for block in blocks[1:]:
        lines = block.split("\n")
        if (
            len(lines) != 2
            or not lines[0].startswith("event: ")
            or not lines[1].startswith("data: ")
        ):
            raise AssertionError(f"malformed event: {block[:200]!r}")
        out.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    return out


class Page:
    """A dashboard page connected in memory: its stream's events so far."""

    def __init__(self, client: Client, headers: dict[str, str] | None = None) -> None:
        self.connection: Connection = client.connect()
        self.connection.request("GET", EVENTS, headers=headers)

    def response(self) -> Any:
        (response,) = parse_responses(self.connection.received())
        return response

    def events(self) -> list[tuple[str, Any]]:
        return events(self.response().body)

    def snapshots(self) -> list[dict[str, Any]]:
        return [data for name, data in self.events() if name == "snapshot"]

    def disconnect(self) -> None:
        self.connection.disconnect()


def close(case: SynchronousTestCase, got: float, want: float, tolerance: float) -> None:
    """``got`` within ``tolerance`` of ``want`` (trial's assertAlmostEqual has no delta)."""
    case.assertLessEqual(abs(got - want), tolerance, f"{got} is not {want} +- {tolerance}")


def loops(clock: Any) -> list[Any]:
    """The dashboard timers scheduled on ``clock``."""
    return [c for c in clock.getDelayedCalls() if isinstance(c.func, LoopingCall)]


class PageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service(models=("m",))
        self.client = Client(self.service)

    def test_one_small_self_contained_page(self) -> None:
        response = self.client.get(PAGE)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(response.header("Cache-Control"), "no-cache")
        body = response.body.decode()
        self.assertLess(len(response.body), 30 * 1024)
        # Nothing fetched at run time: no external reference, no src/href at all.
        self.assertNotRegex(body, r"https?://")
        self.assertNotRegex(body, r"\b(src|href)\s*=")
        self.assertNotIn("/*SCRIPT*/", body)
        self.assertNotIn("/*STYLE*/", body)
        # The policy allows exactly the inlined script and style, and the events.
        policy = response.header("Content-Security-Policy") or ""
        (script,) = re.findall(r"<script>(.*?)</script>", body, re.S)
        (style,) = re.findall(r"<style>(.*?)</style>", body, re.S)
        for kind, text in (("script", script), ("style", style)):
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            self.assertIn(f"{kind}-src 'sha256-{digest}'", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertIn('location.pathname.replace(/\\/+$/, "") + "/events"', script)

    def test_assets_are_package_data(self) -> None:
        with open(os.path.join(REPO_ROOT, "setup.cfg")) as f:
            setup = f.read()
        self.assertRegex(setup, r"\[options\.package_data\]\n(#.*\n)*mockoai\.ops = assets/\*")
        assets = os.path.join(os.path.dirname(dashboard_module.__file__), "assets")
        self.assertEqual(
            sorted(os.listdir(assets)), ["dashboard.css", "dashboard.html", "dashboard.js"]
        )

    def test_labelled_in_metrics(self) -> None:
        self.assertEqual(endpoint_label(PAGE.encode()), PAGE)
        self.assertEqual(endpoint_label(EVENTS.encode()), EVENTS)

    def test_head_starts_no_stream(self) -> None:
        service = make_service(models=("m",), http="twisted")
        response = Client(service).request("HEAD", EVENTS)
        self.assertTrue(response.complete)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        self.assertFalse(service.api.dashboard.ticking)


class StreamTests(SynchronousTestCase):
    """The event stream on a Clock, over the production request path."""

    http = "lean"

    def setUp(self) -> None:
        self.service = make_service(
            http=self.http,
            models=("m",),
            response_delay=constant(0.02),
            itl=constant(0.01),
            tokens_mean=5.0,
            tokens_stddev=0.0,
            max_running=2,
        )
        self.client = Client(self.service)
        self.clock = self.service.clock
        self.dashboard: Dashboard = self.service.api.dashboard

    def test_framing(self) -> None:
        page = Page(self.client)
        response = page.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        self.assertEqual(response.header("Cache-Control"), "no-cache")
        self.assertFalse(response.complete)
        first = page.events()
        self.assertEqual([name for name, _ in first], ["history", "snapshot"])
        self.assertEqual(first[0][1], {"interval": 1.0, "points": []})
        # One snapshot per interval, each a whole event in one write.
        for n in range(1, 6):
            self.clock.advance(1.0)
            self.assertEqual(len(page.snapshots()), 1 + n)
        points = [s["point"] for s in page.snapshots()]
        self.assertEqual([p["t"] - points[0]["t"] for p in points], [0, 1, 2, 3, 4, 5])
        self.assertIsNone(points[0]["requests"])  # a baseline has no rate
        self.assertEqual(points[1]["requests"], {})
        page.disconnect()

    def test_numbers_match_what_was_served(self) -> None:
        page = Page(self.client)
        t0 = self.clock.seconds()
        served = []
        for stream in (True, True, True, False, False):
            response = self.client.post("/v1/chat/completions", chat(stream=stream))
            self.assertEqual(response.status, 200)
            served.append(stream)
        self.assertEqual(self.client.post("/v1/chat/completions", chat("nope")).status, 404)
        self.assertEqual(self.client.get("/stats").status, 200)  # the server's own: left out
        self.assertLess(self.clock.seconds(), t0 + 1.0)
        self.clock.advance(t0 + 1.0 - self.clock.seconds())
        snapshot = page.snapshots()[-1]
        point = snapshot["point"]
        self.assertEqual(point["t"], t0 + 1.0)
        self.assertEqual(point["requests"], {"200": 5.0, "404": 1.0})
        stats = self.service.api.metrics.stats.for_model("m")
        self.assertEqual(stats.completion_tokens.total, 25)
        self.assertEqual(point["tokens"], [stats.prompt_tokens.total, 25.0])
        self.assertEqual(point["models"], {"m": [0, 0]})
        # The window's percentiles are the served ones, to the histograms' precision.
        for name in ("ttft", "itl"):
            expected = getattr(stats, name).percentiles([50.0, 90.0, 99.0])
            for got, want in zip(point[name], expected):
                close(self, got, want * 1000, want * 1000 * 0.021)
        close(self, point["itl"][0], 10.0, 0.2)
        self.assertEqual(
            snapshot["totals"],
            {
                "requests": 6,
                "errors": {"404": 1},
                "kinds": [[404, "model_not_found", 1]],
                "prompt_tokens": int(stats.prompt_tokens.total),
                "generation_tokens": 25,
            },
        )
        recent = snapshot["recent"]
        self.assertEqual(len(recent), 6)
        self.assertEqual(recent, sorted(recent, key=lambda e: e[0], reverse=True))
        newest = recent[0]
        self.assertEqual(newest[1:5], ["/v1/chat/completions", 404, None, False])
        self.assertEqual(newest[9], "model_not_found")
        answered = recent[1:][::-1]
        self.assertEqual([e[4] for e in answered], served)
        for at, endpoint, status, model, _stream, ttft, e2e, prompt, completion, error in answered:
            self.assertTrue(t0 <= at < t0 + 1.0)
            self.assertEqual(
                (endpoint, status, model, completion, error),
                ("/v1/chat/completions", 200, "m", 5, None),
            )
            self.assertEqual(prompt, stats.prompt_tokens.total / 5)
            close(self, ttft, 20.0, 1.0)
            close(self, e2e, 60.0, 1.0)  # 20 ms, then 4 gaps of 10 ms
        # A quiet interval: no requests, the window still remembers the latencies.
        self.clock.advance(1.0)
        quiet = page.snapshots()[-1]["point"]
        self.assertEqual((quiet["requests"], quiet["tokens"]), ({}, [0.0, 0.0]))
        self.assertEqual(quiet["itl"], point["itl"])
        page.disconnect()

    def test_errors_by_kind(self) -> None:
        self.assertEqual(self.client.post("/v1/chat/completions", body=b"{").status, 400)
        self.assertEqual(self.client.post("/v1/chat/completions", chat("nope")).status, 404)
        self.assertEqual(self.client.get("/v1/models/nope").status, 404)
        left = self.client.send("POST", "/v1/chat/completions", chat(max_tokens=50))
        self.clock.advance(0.01)
        left.disconnect()  # before the answer: 499, an error without a code
        page = Page(self.client)
        totals = page.snapshots()[-1]["totals"]
        self.assertEqual(totals["errors"], {"400": 1, "404": 2, "499": 1})
        self.assertEqual(
            totals["kinds"],
            [[400, "invalid_request_error", 1], [404, "model_not_found", 2], [499, "", 1]],
        )
        page.disconnect()

    def test_running_and_waiting(self) -> None:
        page = Page(self.client)
        streams = [
            self.client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=500))
            for _ in range(3)
        ]
        self.clock.advance(1.0)
        self.assertEqual(page.snapshots()[-1]["point"]["models"], {"m": [2, 1]})
        for stream in streams:
            stream.disconnect()
        page.disconnect()

    def test_one_timer_for_every_page_and_none_without(self) -> None:
        self.assertEqual(loops(self.clock), [])
        first, second = Page(self.client), Page(self.client)
        self.assertEqual(len(loops(self.clock)), 1)
        self.assertEqual(len(self.dashboard.pages), 2)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        # The same bytes to both (the second connected after the first's baseline).
        self.assertEqual(first.snapshots()[-2:], second.snapshots()[-2:])
        self.assertEqual(len(first.snapshots()), 3)
        self.assertEqual(len(second.events()), 4)  # history, the last snapshot, two ticks
        first.disconnect()
        self.assertTrue(self.dashboard.ticking)
        self.assertEqual(len(loops(self.clock)), 1)
        second.disconnect()
        self.assertFalse(self.dashboard.ticking)
        self.assertEqual(loops(self.clock), [])
        self.assertEqual(self.dashboard.pages, [])
        self.assertEqual(self.service.site.active, 0)
        # A page later: the history is kept, the rates start afresh.
        self.clock.advance(30.0)
        third = Page(self.client)
        history, snapshot = third.events()[:2]
        self.assertEqual(len(history[1]["points"]), 3)
        self.assertIsNone(snapshot[1]["point"]["requests"])
        third.disconnect()

    def test_history_is_bounded(self) -> None:
        page = Page(self.client)
        self.clock.pump([1.0] * (HISTORY + 20))
        self.assertEqual(len(self.dashboard.history), HISTORY)
        late = Page(self.client)
        points = late.events()[0][1]["points"]
        self.assertEqual(len(points), HISTORY)
        self.assertEqual(points[-1]["t"], self.clock.seconds())
        page.disconnect()
        late.disconnect()

    def test_the_ring_is_bounded(self) -> None:
        ring = self.service.api.metrics.recent
        for _ in range(RECENT + 10):
            self.client.get("/v1/models")
        self.assertEqual(len(ring), RECENT)
        self.assertEqual(ring.maxlen, RECENT)
        page = Page(self.client)
        recent = page.snapshots()[-1]["recent"]
        self.assertEqual(len(recent), SHOWN)
        self.assertEqual({e[1] for e in recent}, {"/v1/models"})
        page.disconnect()

    def test_a_backed_up_page_skips_snapshots(self) -> None:
        slow, fast = Page(self.client), Page(self.client)
        slow_page = self.dashboard.pages[0]
        slow_page.pauseProducing()
        self.clock.advance(1.0)
        self.assertEqual((len(slow.snapshots()), len(fast.snapshots())), (1, 2))
        slow_page.resumeProducing()
        self.clock.advance(1.0)
        self.assertEqual((len(slow.snapshots()), len(fast.snapshots())), (2, 3))
        self.assertEqual(slow.snapshots()[-1], fast.snapshots()[-1])
        slow.disconnect()
        fast.disconnect()

    def test_the_drain_ends_the_streams(self) -> None:
        page = Page(self.client)
        self.clock.advance(1.0)
        stopped = self.service.stopService()
        response = page.response()
        self.assertTrue(response.complete)
        self.assertEqual(len(page.snapshots()), 2)
        self.assertFalse(self.dashboard.ticking)
        self.assertEqual(self.service.site.active, 0)
        self.clock.advance(2.0)  # the last connections' flush, not the 10 s grace period
        self.assertTrue(stopped.called)

    def test_interval_setting(self) -> None:
        service = make_service(models=("m",), dashboard_interval=0.25)
        client = Client(service)
        page = Page(client)
        self.assertEqual(page.events()[0][1]["interval"], 0.25)
        service.clock.pump([0.25] * 4)
        self.assertEqual(len(page.snapshots()), 5)
        self.assertEqual(service.api.dashboard._window.maxlen, 40)  # 10 s of ticks
        page.disconnect()


class TwistedStackStreamTests(StreamTests):
    """The same on twisted.web's HTTP/1.1 stack."""

    http = "twisted"


class Http2Tests(SynchronousTestCase):
    """The stream over HTTP/2 (a TLS listener): events flow, a reset stream is a lost page."""

    def test_events_over_h2(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="mockoai-tls-"))
        self.addCleanup(shutil.rmtree, directory, True)
        service = make_service(models=("m",))
        client = H2Client()
        connection = tls_connect(service, make_cert_pair(directory), client)
        sid = client.request("GET", EVENTS)
        connection.pump.flush()
        run(service, connection, 2.0, 0.5)
        response = client.responses[sid]
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], "text/event-stream; charset=utf-8")
        self.assertFalse(response.ended)
        names = [name for name, _ in events(response.body)]
        self.assertEqual(names, ["history", "snapshot", "snapshot", "snapshot"])
        self.assertTrue(service.api.dashboard.ticking)
        client.reset(sid)
        connection.pump.flush()
        self.assertFalse(service.api.dashboard.ticking)
        self.assertEqual(service.site.active, 0)
        # Another page on the same connection, then the drain ends its stream.
        again = client.request("GET", EVENTS)
        connection.pump.flush()
        run(service, connection, 1.0, 0.5)
        service.stopService()
        run(service, connection, 0.1, 0.05)
        self.assertTrue(client.responses[again].ended)
        self.assertEqual(len(events(client.responses[again].body)), 3)


class AuthTests(SynchronousTestCase):
    """With keys, the numbers follow /metrics' rule; the page itself is the static file."""

    def test_exempt_like_metrics(self) -> None:
        client = Client(make_service(api_keys=(ApiKey(KEY),)))
        self.assertEqual(client.get("/v1/models").status, 401)
        self.assertEqual(client.get(PAGE).status, 200)
        page = Page(client)
        self.assertEqual(page.response().status, 200)
        page.disconnect()

    def test_auth_health_wants_a_key(self) -> None:
        client = Client(make_service(api_keys=(ApiKey(KEY),), auth_health=True))
        self.assertEqual(client.get("/metrics").status, 401)
        self.assertEqual(client.get(PAGE).status, 200)
        refused = client.get(EVENTS)
        self.assertEqual(refused.status, 401)
        self.assertEqual(
            refused.json()["error"]["message"][:34], "You didn't provide an API key. You"
        )
        page = Page(client, headers={"Authorization": f"Bearer {KEY}"})
        self.assertEqual(page.response().status, 200)
        self.assertEqual(len(page.snapshots()), 1)
        page.disconnect()


class MergeTests(SynchronousTestCase):
    """Snapshots of several workers' states: summed, and differenced per worker."""

    def test_rates_per_worker(self) -> None:
        a, b = make_service(models=("m",)), make_service(models=("m",))
        dashboard: Dashboard = a.api.dashboard
        clients = {id(a): Client(a), id(b): Client(b)}

        def serve(service: Any, n: int) -> None:
            for _ in range(n):
                clients[id(service)].post("/v1/chat/completions", chat(max_tokens=2))

        def snapshot(*services: Any, at: float) -> dict[str, Any]:
            states = [s.api.metrics.state() for s in services]
            return dashboard.snapshot(states, at)

        self.assertIsNone(snapshot(a, b, at=0.0)["point"]["requests"])
        serve(a, 2)
        serve(b, 3)
        one = snapshot(a, b, at=1.0)
        self.assertEqual(one["point"]["workers"], 2)
        self.assertEqual(one["point"]["requests"], {"200": 5.0})
        self.assertEqual(one["point"]["tokens"][1], 10.0)
        self.assertEqual(one["totals"]["requests"], 5)
        self.assertEqual(len(one["recent"]), 5)
        self.assertEqual(one["point"]["models"], {"m": [0, 0]})
        # b misses a tick: its requests count when it is back, over its own two seconds.
        serve(a, 1)
        serve(b, 1)
        two = snapshot(a, at=2.0)
        self.assertEqual((two["point"]["workers"], two["point"]["requests"]), (1, {"200": 1.0}))
        serve(b, 1)
        three = snapshot(a, b, at=3.0)
        self.assertEqual(three["point"]["requests"], {"200": 1.0})
        self.assertEqual(three["totals"]["requests"], 8)
        # A new worker (a restarted one has a new name) is a baseline, not a spike.
        c = make_service(models=("m",))
        for _ in range(4):
            Client(c).post("/v1/chat/completions", chat(max_tokens=2))
        four = snapshot(a, b, c, at=4.0)
        self.assertEqual(four["point"]["requests"], {})
        self.assertEqual(four["totals"]["requests"], 12)
        self.assertEqual(len(four["recent"]), 12)
        # Error kinds are summed over the workers too.
        for service in (a, b):
            clients[id(service)].post("/v1/chat/completions", chat("nope"))
        self.assertEqual(snapshot(a, b, at=5.0)["totals"]["kinds"], [[404, "model_not_found", 2]])

    def test_engines_are_summed(self) -> None:
        services = [make_service(models=("m",), max_running=1) for _ in range(2)]
        for service in services:
            client = Client(service)
            for _ in range(2):
                client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=100))
        states = [s.api.metrics.state() for s in services]
        point = services[0].api.dashboard.snapshot(states, 0.0)["point"]
        self.assertEqual(point["models"], {"m": [2, 2]})


class SiblingTests(TestCase):
    """A tick gathers the siblings' states over real unix sockets."""

    def test_tick_merges_siblings(self) -> Any:
        from twisted.internet import reactor

        run_dir = tempfile.mkdtemp(prefix="mockoai-test-")
        self.addCleanup(shutil.rmtree, run_dir, True)
        services = [make_service(models=("m",)) for _ in range(3)]
        for index, service in enumerate(services):
            for _ in range(index + 1):
                Client(service).post("/v1/chat/completions", chat())
            metrics = service.api.metrics
            metrics.siblings = Siblings(reactor, run_dir, index, metrics.state)
            metrics.siblings.startService()
            self.addCleanup(metrics.siblings.stopService)
        dashboard: Dashboard = services[2].api.dashboard
        ticked = dashboard.tick()
        assert ticked is not None

        def check(_: object) -> None:
            point = dashboard.history[-1]
            self.assertEqual(point["workers"], 3)
            name, snapshot = events(b"retry: 2000\n\n" + dashboard._last)[0]
            self.assertEqual(name, "snapshot")
            self.assertEqual(snapshot["totals"]["requests"], 1 + 2 + 3)
            self.assertEqual(snapshot["totals"]["generation_tokens"], 5 * 6)
            self.assertEqual(len(snapshot["recent"]), 6)

        return ticked.addCallback(check)


class HistogramWindowTests(SynchronousTestCase):
    def test_of_buckets_is_what_was_recorded_in_between(self) -> None:
        rng = np.random.default_rng(7)
        h = Histogram()
        for v in rng.lognormal(-4, 1, 500):
            h.record(float(v))
        before = dict(h.state()["b"])
        between = rng.lognormal(-2, 0.5, 2000)
        for v in between:
            h.record(float(v))
        after = dict(h.state()["b"])
        counts = {i: n - before.get(i, 0) for i, n in after.items()}
        window = h.of_buckets(counts)
        self.assertEqual(window.count, 2000)
        for got, p in zip(window.percentiles([50, 90, 99]), (50, 90, 99)):
            want = float(np.percentile(between, p))
            close(self, got, want, want * 0.021)
        self.assertEqual(h.of_buckets({}).count, 0)
        self.assertEqual(h.count, 2500)  # the source is left as it was


# ---------------------------------------------------------------------------
# Real servers


def _read_snapshot(port: int, workers: int, timeout: float = 20.0) -> dict[str, Any]:
    """
    The first snapshot of a real server's event stream that covers ``workers``
    workers (on a loaded machine a sibling may miss its 2 s to answer a tick,
    and is then left out of that one, by design).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", EVENTS)
        response = connection.getresponse()
        assert response.status == 200, response.status
        text = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text += response.read1(65536).decode()
            *blocks, text = text.split("\n\n")
            for block in blocks:
                if block.startswith("event: snapshot\n"):
                    snapshot: dict[str, Any] = json.loads(block.split("\ndata: ", 1)[1])
                    if snapshot["point"]["workers"] == workers:
                        return snapshot
        raise AssertionError(f"no snapshot of {workers} workers within {timeout} s")
    finally:
        connection.close()


def _post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Status and, for a stream, its usage."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = response.read().decode()
        usage = None
        for line in data.split("\n"):
            if line.startswith("data: {") and '"usage":{' in line:
                usage = json.loads(line[6:])["usage"]
        return response.status, usage
    finally:
        connection.close()


class WorkersTests(SynchronousTestCase):
    """Whichever of two workers serves the stream, it shows both workers' numbers."""

    def test_merged_under_workers(self) -> None:
        server = TwistdProcess(["--workers", "2", "--articles", "64"])
        self.addCleanup(server.cleanup)
        server.start()
        deadline = time.monotonic() + 20
        while server.stdout.count("ready in") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(40):
            self.assertEqual(_post(server.port, chat("gpt-4o"))[0], 200)
        for _ in range(6):  # new connections: the kernel spreads them over both
            snapshot = _read_snapshot(server.port, workers=2)
            self.assertEqual(snapshot["totals"]["requests"], 40)
            self.assertEqual(snapshot["totals"]["generation_tokens"], 40 * 5)
            self.assertEqual(len(snapshot["recent"]), SHOWN)
        self.assertEqual(server.stop(timeout=30), 0)


class LeavingTests(SynchronousTestCase):
    """
    Pages that close their connection (FIN, then a reset) over real sockets:
    nothing in the log -- twisted.web logged a critical "Producer was not
    unregistered" when the transport stopped the stream before the request
    heard the connection was gone -- and the next page is served.
    """

    def leave(self, stack: str) -> None:
        server = TwistdProcess(["--articles", "64", "--http", stack])
        self.addCleanup(server.cleanup)
        server.start()
        for reset in (False, True, False):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
                sock.sendall(f"GET {EVENTS} HTTP/1.1\r\nHost: mockoai.test\r\n\r\n".encode())
                data = b""
                while b"event: snapshot" not in data:
                    more = sock.recv(65536)
                    self.assertTrue(more, "closed before the first snapshot")
                    data += more
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.2)
        self.assertEqual(_read_snapshot(server.port, workers=1)["point"]["workers"], 1)
        self.assertEqual(server.stop(), 0)
        for line in server.stdout.splitlines():
            self.assertNotIn("rror", line)
            self.assertNotIn("critical", line.lower())

    def test_lean(self) -> None:
        self.leave("lean")

    def test_twisted(self) -> None:
        self.leave("twisted")


_PROFILE = """
[[models]]
id = "small"
tokens_mean = 40
tokens_stddev = 0
response_delay = 20
itl = 5
max_running = 4

[[models]]
id = "large"
tokens_mean = 24
tokens_stddev = 0
response_delay = 60
itl = 20
max_running = 2
"""


class Load:
    """Closed-loop clients streaming from both models, and some asking for a missing one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.generated = 0
        self.failures: list[str] = []
        plan = [("small", 0.0)] * 5 + [("large", 0.0)] * 4 + [("missing", 0.4)]
        self.threads = [
            threading.Thread(target=self.run, args=(model, pause), daemon=True)
            for model, pause in plan
        ]
        for thread in self.threads:
            thread.start()

    def run(self, model: str, pause: float) -> None:
        body = {
            **chat(model, stream=True, max_tokens=64),
            "stream_options": {"include_usage": True},
        }
        while not self.stop.is_set():
            try:
                status, usage = _post(self.port, body)
            except OSError as e:
                with self.lock:
                    self.failures.append(repr(e))
                return
            with self.lock:
                self.sent += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if usage is not None:
                    self.generated += usage["completion_tokens"]
            if pause:
                self.stop.wait(pause)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


class BrowserTests(SynchronousTestCase):
    """Headless Chromium shows the dashboard of a server under load, and it moves."""

    def setUp(self) -> None:
        if find_chromium() is None:
            raise SkipTest("chromium is not installed (Debian package 'chromium')")
        directory = tempfile.mkdtemp(prefix="mockoai-dashboard-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.directory = directory
        profile = os.path.join(directory, "profile.toml")
        with open(profile, "w") as f:
            f.write(_PROFILE)
        self.server = TwistdProcess(
            [
                "--config",
                profile,
                "--articles",
                "64",
                "--stream-tokens",
                "1",
                "--grace-period",
                "20",
            ]
        )
        self.addCleanup(self.server.cleanup)
        self.server.start()

    def test_charts_move_under_load(self) -> None:
        load = Load(self.server.port)
        self.addCleanup(load.finish)
        browser = Browser(f"{self.server.base_url}{PAGE}", width=1360, height=1180)
        self.addCleanup(browser.close)

        def chart(name: str) -> dict[str, Any]:
            data = browser.evaluate(
                f"Object.assign({{}}, document.getElementById('{name}').dataset)"
            )
            assert isinstance(data, dict)
            data["last"] = json.loads(data.get("last", "{}"))
            return data

        def snapshots() -> int:
            return int(browser.evaluate("+document.body.dataset.snapshots"))

        browser.wait_for(
            "document.body.dataset.state === 'live' && +document.body.dataset.snapshots >= 4"
            " && JSON.parse(document.getElementById('requests').dataset.last || '{}').all > 0",
            what="a live page with request rates",
        )
        names = ("requests", "tokens", "ttft", "itl", "running", "queued", "errors")
        before = {name: chart(name) for name in names}
        image = browser.evaluate("document.querySelector('#requests canvas').toDataURL()")
        seen = snapshots()
        browser.wait_for(f"+document.body.dataset.snapshots >= {seen + 2}", what="two more")
        after = {name: chart(name) for name in names}
        for name in names:
            self.assertGreaterEqual(int(after[name]["points"]), int(before[name]["points"]) + 2)
        self.assertNotEqual(
            browser.evaluate("document.querySelector('#requests canvas').toDataURL()"), image
        )
        # What the charts show is the load being served.
        self.assertGreater(after["requests"]["last"]["all"], 1.0)
        self.assertGreater(after["tokens"]["last"]["generation"], 10.0)
        ttft, itl = after["ttft"]["last"], after["itl"]["last"]
        self.assertGreaterEqual(ttft["p50"], 19.0)  # the small model's 20 ms at least
        self.assertLessEqual(ttft["p50"], ttft["p90"])
        self.assertLessEqual(ttft["p90"], ttft["p99"])
        self.assertGreaterEqual(itl["p50"], 4.5)  # 5 and 20 ms per token
        self.assertLess(itl["p50"], 40.0)
        self.assertEqual(set(after["running"]["last"]), {"small", "large"})
        self.assertGreaterEqual(float(after["running"]["max"]), 2)
        self.assertGreaterEqual(float(after["queued"]["max"]), 1)  # 4 clients, 2 seats
        self.assertIn("404", after["errors"]["last"])
        rows = browser.evaluate(
            "[...document.querySelectorAll('#recent tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        self.assertEqual(len(rows), SHOWN)
        self.assertEqual({row[1] for row in rows}, {"/v1/chat/completions"})
        self.assertTrue({"small", "large"} & {row[2] for row in rows})
        # docs/dashboard.png: MOCKOAI_DASHBOARD_SCREENSHOT=docs/dashboard.png, and
        # MOCKOAI_DASHBOARD_HOLD=90 for charts with 90 s of history.
        shot = os.environ.get("MOCKOAI_DASHBOARD_SCREENSHOT") or os.path.join(
            self.directory, "dashboard.png"
        )
        time.sleep(float(os.environ.get("MOCKOAI_DASHBOARD_HOLD", "0")))
        png = browser.screenshot(shot)
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 20_000)

        # Light and dark: the page follows the browser's scheme.
        backgrounds = []
        for scheme in ("light", "dark"):
            browser.call(
                "Emulation.setEmulatedMedia",
                features=[{"name": "prefers-color-scheme", "value": scheme}],
            )
            backgrounds.append(browser.evaluate("getComputedStyle(document.body).backgroundColor"))
        self.assertEqual(backgrounds, ["rgb(244, 244, 242)", "rgb(24, 25, 27)"])

        # Load stops: the page's totals come to exactly what was served.
        load.finish()
        self.assertEqual(load.failures, [])
        self.assertEqual(set(load.statuses), {200, 404})
        browser.wait_for(
            f"+document.body.dataset.requests === {load.sent}"
            f" && +document.body.dataset.generationTokens === {load.generated}",
            timeout=10,
            what=f"the page's totals at {load.sent} requests, {load.generated} tokens",
        )
        self.assertEqual(int(browser.evaluate("+document.body.dataset.errors")), load.statuses[404])
        kinds = browser.evaluate(
            "[...document.querySelectorAll('#statuses tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        self.assertEqual(kinds, [["404", "model_not_found", f"{load.statuses[404]:,}"]])

        # Shutdown is not held up by the open page, which then waits to reconnect.
        started = time.monotonic()
        self.assertEqual(self.server.stop(timeout=30), 0)
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertIn("draining 1 in-flight request(s)", self.server.stdout)
        browser.wait_for("document.body.dataset.state !== 'live'", timeout=10)
