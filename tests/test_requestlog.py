"""
--request-log: one JSON line per request, buffered and written by a timer,
rotated by size, flushed at shutdown.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.requestlog import RequestLog, mask, worker_path
from mockoai.pipeline.outcome import Outcome
from mockoai.sim.latency import constant
from tests.support import EPOCH, Client, TwistdProcess, make_service

FIELDS = {
    "time",
    "id",
    "client",
    "key",
    "method",
    "endpoint",
    "status",
    "model",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "queue_ms",
    "ttft_ms",
    "e2e_ms",
    "finish_reason",
    "error",
    "rule",
    "fault",
}


def chat(stream: bool = False, max_tokens: int = 5) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


def read_lines(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _tempdir(case: Any) -> str:
    """A fresh directory, removed after the test (short: unix socket paths are limited)."""
    path = tempfile.mkdtemp(prefix="mockoai-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class _FakeRequest:
    method = b"POST"
    path = b"/v1/completions"
    code = 200

    def __init__(self, n: int) -> None:
        self.n = n

    def getHeader(self, name: bytes) -> bytes | None:
        return None

    def getResponseHeader(self, name: bytes) -> bytes:
        return b"req_%d" % self.n

    def getClientAddress(self) -> Any:
        raise RuntimeError("gone")


class MaskTests(SynchronousTestCase):
    def test_openai_style(self) -> None:
        self.assertEqual(mask("sk-proj-abcdefghijklmnopqrstuvwxyz"), "sk-...wxyz")
        self.assertEqual(mask("sk-or-v1-0123456789abcdef"), "sk-...cdef")
        self.assertEqual(mask("abcdefghijklmnop"), "ab...mnop")
        self.assertEqual(mask("short"), "...rt")
        self.assertEqual(mask(""), "")

    def test_worker_paths(self) -> None:
        self.assertEqual(worker_path("/var/log/req.jsonl", None), "/var/log/req.jsonl")
        self.assertEqual(worker_path("/var/log/req.jsonl", 3), "/var/log/req-3.jsonl")


class ServiceLogTests(SynchronousTestCase):
    """The log of a real service on a Clock."""

    def setUp(self) -> None:
        self.path = os.path.join(_tempdir(self), "requests.jsonl")
        self.service = make_service(
            models=("m",),
            response_delay=constant(0.1),
            itl=constant(0.02),
            max_running=1,
            request_log=self.path,
        )
        self.log = self.service.request_log
        assert self.log is not None
        self.log.startService()
        self.addCleanup(self.log.close)
        self.client = Client(self.service)
        self.clock = self.service.clock

    def step(self, seconds: float) -> None:
        """Run the clock in 10 ms steps (one big advance runs every timer at its end)."""
        for _ in range(round(seconds / 0.01)):
            self.clock.advance(0.01)

    def test_lines_wait_for_the_timer(self) -> None:
        headers = {"Authorization": "Bearer sk-proj-0123456789abcdefghij"}
        first = self.client.send("POST", "/v1/chat/completions", chat(), headers=headers)
        second = self.client.send("POST", "/v1/chat/completions", chat(stream=True))
        self.step(0.5)
        self.client.get("/v1/models/nope")
        self.assertEqual((first.response().status, second.response().status), (200, 200))
        self.assertEqual(read_lines(self.path), [], "nothing written per request")
        self.step(0.51)  # the flush timer: 1 s after start
        lines = read_lines(self.path)
        self.assertEqual(len(lines), 3)
        for line in lines:
            self.assertEqual(set(line), FIELDS)
        plain, stream, missing = lines
        self.assertEqual(plain["key"], "sk-...ghij")
        self.assertEqual(plain["id"], first.response().header("x-request-id"))
        self.assertEqual(plain["client"], "127.0.0.1")
        self.assertEqual(
            (plain["endpoint"], plain["model"], plain["status"], plain["stream"]),
            ("/v1/chat/completions", "m", 200, False),
        )
        self.assertEqual((plain["completion_tokens"], plain["finish_reason"]), (5, "length"))
        self.assertEqual(plain["prompt_tokens"], stream["prompt_tokens"])
        self.assertEqual((plain["ttft_ms"], plain["queue_ms"]), (100.0, 0.0))
        self.assertEqual(plain["e2e_ms"], 180.0)  # 0.1 s + 4 steps of 0.02 s
        # The stream queued behind the plain answer.
        self.assertEqual((stream["stream"], stream["key"]), (True, ""))
        self.assertEqual(stream["queue_ms"], 180.0)
        self.assertEqual(stream["ttft_ms"], 280.0)
        self.assertEqual(stream["e2e_ms"], 360.0)
        self.assertEqual(
            (missing["endpoint"], missing["status"], missing["error"], missing["model"]),
            ("/v1/models/{model}", 404, "model_not_found", None),
        )
        self.assertTrue(plain["time"].endswith("Z"))
        self.assertLessEqual(plain["time"], stream["time"])

    def test_errors_and_cancellations(self) -> None:
        self.client.post("/v1/chat/completions", {"model": "m", "messages": "x"})
        stream = self.client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=50))
        self.step(0.15)
        stream.disconnect()
        plain = self.client.send("POST", "/v1/chat/completions", chat(max_tokens=50))
        self.step(0.01)
        plain.disconnect()
        self.step(1.0)
        invalid, cancelled, left = read_lines(self.path)
        self.assertEqual((invalid["status"], invalid["error"]), (400, "invalid_type"))
        self.assertEqual((cancelled["status"], cancelled["finish_reason"]), (200, "cancelled"))
        self.assertEqual(cancelled["completion_tokens"], 3)  # out at 0.1, 0.12, 0.14 s
        self.assertEqual((left["status"], left["finish_reason"]), (499, "cancelled"))

    def test_shutdown_flushes(self) -> None:
        self.client.post("/v1/chat/completions", chat())
        self.client.get("/health")
        self.assertEqual(read_lines(self.path), [])
        self.service.stopService()
        self.clock.advance(0.05)  # the drain; the flush timer is still 0.8 s away
        lines = read_lines(self.path)
        self.assertEqual([line["endpoint"] for line in lines], ["/v1/chat/completions", "/health"])


class FailingLogTests(SynchronousTestCase):
    def test_a_close_that_fails_is_logged_and_the_shutdown_goes_on(self) -> None:
        # /dev/full opens, then refuses every write (ENOSPC), as a full disk does.
        if not os.path.exists("/dev/full"):
            self.skipTest("no /dev/full")
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = make_service(models=("m",), request_log="/dev/full")
        log = service.request_log
        assert log is not None
        log.startService()
        client = Client(service)
        self.assertEqual(client.post("/v1/chat/completions", chat()).status, 200)
        stopped = service.stopService()  # before the flush timer: the close writes
        service.clock.advance(0.05)
        self.successResultOf(stopped)
        [failed] = [e for e in events if e.get("log_format", "").startswith("closing the")]
        self.assertEqual(formatEvent(failed), "closing the request log /dev/full failed")
        self.assertEqual(failed["log_level"], LogLevel.error)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        # ... and the rest of the shutdown happened: the summary, "stopped".
        said = [formatEvent(e) for e in events if e.get("log_namespace") == "mockoai"]
        self.assertTrue(any(line.startswith("m: 1 requests, 1 completed") for line in said), said)
        self.assertEqual(said[-1], "stopped")
        self.assertTrue(log.file.closed)


class RotationTests(SynchronousTestCase):
    def test_rotates_by_size_and_keeps_n_files(self) -> None:
        directory = _tempdir(self)
        path = os.path.join(directory, "r.jsonl")
        clock = Clock()
        clock.advance(EPOCH)
        log = RequestLog(path, clock, max_size=2048, files=2)
        log.startService()
        outcome = Outcome(model="m", stream=True, prompt_tokens=7)
        outcome.completed(0.5, ttft=0.1, completion_tokens=9)
        for n in range(60):
            log.add(_FakeRequest(n), 200, "/v1/completions", outcome)
        clock.advance(1.0)
        log.close()
        names = sorted(os.listdir(directory))
        self.assertEqual(names, ["r.jsonl", "r.jsonl.1", "r.jsonl.2"])
        for name in names:
            self.assertLessEqual(os.path.getsize(os.path.join(directory, name)), 2048 + 400)
        newest = read_lines(path)
        self.assertEqual(newest[-1]["id"], "req_59")
        self.assertEqual(newest[-1]["client"], "")
        rotated = read_lines(path + ".1")
        self.assertEqual(int(rotated[-1]["id"][4:]) + 1, int(newest[0]["id"][4:]))
        self.assertEqual(newest[-1]["e2e_ms"], 500.0)

    def test_a_full_buffer_flushes_without_the_timer(self) -> None:
        directory = _tempdir(self)
        path = os.path.join(directory, "r.jsonl")
        log = RequestLog(path, Clock())
        from mockoai.ops import requestlog

        for n in range(requestlog.FLUSH_LINES):
            log.add(_FakeRequest(n), 204, "/health", None)
        log.file.flush()
        self.assertEqual(len(read_lines(path)), requestlog.FLUSH_LINES)
        log.close()


class EndToEndTests(SynchronousTestCase):
    def test_real_server_writes_its_log_at_shutdown(self) -> None:
        server = TwistdProcess(["--articles", "64", "--request-log", "requests.jsonl"])
        self.addCleanup(server.cleanup)
        server.start()
        import http.client

        for path in ("/health", "/v1/models", "/nope"):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
        server.stop()
        lines = read_lines(os.path.join(server.cwd, "requests.jsonl"))
        self.assertEqual(
            [(line["endpoint"], line["status"]) for line in lines],
            [("/health", 200), ("/v1/models", 200), ("other", 404)],
        )
