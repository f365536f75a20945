"""
Hostile clients at the HTTP layer (issue 18), over real sockets against
``twistd -n mockoai``, on both HTTP/1.1 stacks where both apply:

- a request with a body is judged from its head (keys, route, size, drain)
  and answered and closed before its body is read, so a keyless flood of
  large bodies takes no memory;
- a body must arrive in time (a total deadline and a minimum rate: 408);
- HTTP/1.1 framing: one answer per request and in order (upgrades ignored,
  a refusal after the valid requests before it), no ``100 Continue`` before
  a refusal, HTTP/1.0 keep-alive only when asked for and then said so, a 400
  for HTTP/1.1 without ``Host`` and for HTTP/0.9;
- a request pipelined behind the last stream of a drain gets its 503;
- a keep-alive connection is closed after ``--keepalive-requests`` answers.

Every real-socket test here fails on the code before the fix.  The deadline
tables and the memory release are unit-tested on a fake clock.
"""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import resource
import shutil
import signal
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import AUTO_CONNECTIONS, ApiKey, describe, load_settings
from mockoai.wire import guard, heap
from mockoai.wire.guard import BodyDeadlines
from mockoai.wire.heap import LargeBodies
from tests.optional import STACKS
from tests.support import EPOCH, Client, Response, TwistdProcess, make_service, parse_responses

KEY = "sk-hostile-0123456789"
CHAT = b"/v1/chat/completions"
BODY = json.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
).encode()


def post(
    body: bytes = BODY, path: bytes = CHAT, extra: bytes = b"", length: int | None = None
) -> bytes:
    """A POST head (with ``Content-Length`` ``length``, by default the body's) and ``body``."""
    size = len(body) if length is None else length
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (path, extra, size, body)
    )


def get(path: bytes = b"/health", extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET %s %s\r\nHost: t\r\n%s\r\n" % (path, version, extra)


def bearer(key: str = KEY) -> bytes:
    return b"Authorization: Bearer %s\r\n" % key.encode()


def exchange(port: int, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes (True) or ``timeout`` passes (False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def statuses(data: bytes, closed: bool = True) -> list[int]:
    return [r.status for r in parse_responses(data, closed=closed)]


def message(response: Response) -> str:
    return str(response.json()["error"]["message"])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class ServerCase(SynchronousTestCase):
    def serve(self, http: str, *args: str) -> TwistdProcess:
        server = TwistdProcess(["--http", http, "--articles", "64", *args]).start()
        self.addCleanup(server.cleanup)
        return server

    def assertQuietLog(self, server: TwistdProcess) -> None:
        for word in ("Traceback", "Unhandled", "server_error"):
            self.assertNotIn(word, server.stdout + server.stderr)


# --------------------------------------------------------------------------
# Item 1: decided from the head, before the body is read


class JudgedFromTheHeadTests(ServerCase):
    def flood(self, port: int, head: bytes, body_bytes: int, clients: int) -> list[bytes]:
        """``clients`` connections each send ``head`` and up to ``body_bytes`` of a body."""
        answers: list[bytes] = []

        def one() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                chunk = b"x" * 65536
                with contextlib.suppress(OSError):
                    sock.sendall(head)
                    sent = 0
                    while sent < body_bytes:
                        sent += sock.send(chunk[: body_bytes - sent])
                data, closed = read_until_closed(sock, 8.0)
                answers.append(data if closed else b"(still open) " + data)

        threads = [threading.Thread(target=one) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return answers

    def run_stack(self, http: str) -> None:
        server = self.serve(http, "--api-key", KEY)
        assert server.process is not None
        pid = server.process.pid
        exchange(server.port, get())  # warm up
        before = rss_mb(pid)
        # 20 keyless clients, each announcing 15 MB and sending 8 MB of it.
        started = time.monotonic()
        head = post(b"", length=15_000_000)
        answers = self.flood(server.port, head, 8_000_000, 20)
        for data in answers:
            [response] = parse_responses(data, closed=True)
            self.assertEqual(response.status, 401, data[:200])
            self.assertEqual(response.header("Connection"), "close")
        self.assertLess(time.monotonic() - started, 10.0)
        if platform.python_implementation() == "CPython":  # (PyPy frees its reads lazily)
            self.assertLess(rss_mb(pid) - before, 40.0, f"{http}: the bodies were buffered")

        # A route that does not exist, or a wrong method, is known from the head too.
        for head, status in (
            (post(b"", b"/v1/nothing", bearer(), 15_000_000), 404),
            (post(b"", b"/v1/models", bearer(), 15_000_000), 405),
        ):
            [data] = self.flood(server.port, head, 1_000_000, 1)
            self.assertEqual(statuses(data), [status], data[:300])

        # No 100 Continue for what is refused anyway.
        head = post(b"", extra=b"Expect: 100-continue\r\n", length=50)
        data, closed = exchange(server.port, head)
        self.assertTrue(closed)
        self.assertTrue(data.startswith(b"HTTP/1.1 401 "), data[:100])
        self.assertNotIn(b"100 Continue", data)

        # A request with a valid key is served as before, and keeps its connection.
        data, closed = exchange(server.port, post(extra=bearer()), timeout=1.0)
        self.assertEqual((statuses(data, closed), closed), ([200], False))
        self.assertQuietLog(server)

    def test_lean(self) -> None:
        self.run_stack("lean")

    def test_lean_python(self) -> None:
        self.run_stack("lean-python")

    def test_twisted(self) -> None:
        self.run_stack("twisted")


class LargeBodiesGiveMemoryBackTests(ServerCase):
    def test_lean(self) -> None:
        """40 bodies of 12 MB, read whole (with a key): the memory goes back afterwards."""
        server = self.serve("lean", "--api-key", KEY, "--max-body-size", "16MiB")
        assert server.process is not None
        pid = server.process.pid
        exchange(server.port, get())
        before = rss_mb(pid)
        body = b"x" * 12_000_000
        request = post(body, extra=bearer() + b"Connection: close\r\n")
        peak = [before]

        def one() -> None:
            data, _ = exchange(server.port, request, timeout=30)
            self.assertEqual(statuses(data), [400])  # not JSON: read whole, then refused

        threads = [threading.Thread(target=one) for _ in range(40)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)
        time.sleep(heap.TRIM_BODY_DELAY + 1.5)
        after = rss_mb(pid)
        self.assertGreater(peak[0] - before, 100.0, "the bodies were not read at once")
        self.assertLess(after - before, 15.0, f"before {before:.0f}, peak {peak[0]:.0f} MB")


class Http2JudgedFromTheHeadTests(SynchronousTestCase):
    """Over HTTP/2 a keyless body is dropped as it arrives, and the stream answered 401."""

    def test_keyless_body_is_not_kept(self) -> None:
        from tests.test_tls import CHAT as H2_CHAT
        from tests.test_tls import H2Client, make_cert_pair, tls_connect

        directory = tempfile.mkdtemp(prefix="mockoai-h2-")
        self.addCleanup(shutil.rmtree, directory, True)
        service = make_service(api_keys=(ApiKey(KEY),))
        site = service.site
        kept: list[int] = []
        refuse = site.refuse_request

        def spy(request: Any, error: Any) -> None:
            kept.append(len(request.content.getvalue()))
            refuse(request, error)

        self.patch(site, "refuse_request", spy)
        client = H2Client()
        connection = tls_connect(service, make_cert_pair(Path(directory)), client)
        sid = client.post(H2_CHAT, {"model": "gpt-4o", "pad": "x" * 15_000})
        connection.pump.flush()
        response = client.responses[sid]
        self.assertEqual((response.status, response.ended), (401, True))
        self.assertEqual(kept, [0])
        self.assertEqual(site.active, 0)


# --------------------------------------------------------------------------
# Item 2: the body deadline


class BodyDeadlineTests(ServerCase):
    def run_stack(self, http: str) -> None:
        server = self.serve(http, "--idle-timeout", "30")
        results: dict[str, tuple[float, bytes]] = {}

        def slow(name: str, interval: float) -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                sock.sendall(post(b"{", length=100))
                started = time.monotonic()
                sock.settimeout(interval or 20)
                data = b""
                while True:
                    with contextlib.suppress(OSError):
                        if interval:
                            sock.send(b" ")  # one byte now and then: never idle
                    try:
                        chunk = sock.recv(4096)
                    except socket.timeout:
                        continue
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    data += chunk
                results[name] = (time.monotonic() - started, data)

        threads = [
            threading.Thread(target=slow, args=("trickle", 1.0)),
            threading.Thread(target=slow, args=("silent", 0.0)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(25)
        for name in ("trickle", "silent"):
            took, data = results[name]
            [response] = parse_responses(data, closed=True)
            self.assertEqual(response.status, 408, f"{http} {name}")
            self.assertEqual(response.json()["error"]["code"], "request_timeout")
            self.assertIn("bytes/s", message(response))
            self.assertLess(took, guard.BODY_SWEEP + 5.0 + 2.0, f"{http} {name}")
        self.assertQuietLog(server)

    def test_lean(self) -> None:
        self.run_stack("lean")

    def test_lean_python(self) -> None:
        self.run_stack("lean-python")

    def test_twisted(self) -> None:
        self.run_stack("twisted")


class BodyDeadlinesUnitTests(SynchronousTestCase):
    class Body:
        def __init__(self) -> None:
            self.received = 0
            self.errors: list[int] = []

        def body_received(self) -> int:
            return self.received

        def body_timed_out(self, error: object) -> None:
            self.errors.append(error.status)  # type: ignore[attr-defined]

    def test_total_and_rate(self) -> None:
        clock = Clock()
        deadlines = BodyDeadlines(clock, timeout=10.0, min_rate=100, grace=2.0)
        slow, late, whole = self.Body(), self.Body(), self.Body()
        for body in (slow, late, whole):
            deadlines.start(body)
        deadlines.start(late)  # already watched: keeps its start
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        late.received = whole.received = 10_000
        slow.received = 150  # under 100 bytes/s once 2 s have passed
        clock.advance(1.0)
        self.assertEqual(slow.errors, [])  # within the grace
        clock.advance(1.0)
        self.assertEqual(slow.errors, [408])
        deadlines.done(whole)
        clock.advance(7.0)
        self.assertEqual(late.errors, [])
        clock.advance(1.0)  # 10 s: fast enough, yet not whole in time
        self.assertEqual((late.errors, whole.errors), ([408], []))
        self.assertEqual((len(deadlines), deadlines.shed), (0, 2))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_off(self) -> None:
        clock = Clock()
        deadlines = BodyDeadlines(clock, 0, 0)
        deadlines.start(self.Body())
        self.assertEqual((len(deadlines), clock.getDelayedCalls(), deadlines.on), (0, [], False))

    def test_slow_body_in_memory_on_both_stacks(self) -> None:
        for http in STACKS:
            clock = Clock()
            clock.advance(EPOCH)
            service = make_service(clock, http=http, idle_timeout=30.0, body_timeout=3.0)
            connection = Client(service).connect()
            connection.send(post(b"{", length=100))
            self.assertEqual(len(service.site.body_deadlines), 1, http)
            clock.advance(4.0)
            [response] = connection.responses()
            self.assertEqual((http, response.status), (http, 408))
            self.assertIn("within 3 s", message(response))
            self.assertTrue(connection.closing, http)
            connection.disconnect()
            self.assertEqual(len(service.site.body_deadlines), 0, http)


# --------------------------------------------------------------------------
# Items 3-6: HTTP/1.1 framing


class FramingTests(ServerCase):
    close = b"Connection: close\r\n"

    def test_one_answer_per_request_upgrades_ignored(self) -> None:
        """Item 3: an upgrade got a 400 and then its 200; CONNECT a 400 and then a 404."""
        for http in STACKS:
            port = self.serve(http).port
            websocket = get(extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
            data, closed = exchange(port, websocket + get(extra=self.close))
            self.assertEqual((statuses(data), closed), ([200, 200], True), data[:400])
            # curl --http2 on http:// sends Upgrade: h2c, on a POST with its body too.
            h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n"
            data, closed = exchange(port, post(extra=h2c) + get(extra=self.close))
            responses = parse_responses(data, closed=True)
            self.assertEqual([r.status for r in responses], [200, 200], data[:400])
            self.assertEqual(responses[0].json()["object"], "chat.completion")
            # CONNECT: one answer (no route takes it).
            connect = b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            data, closed = exchange(port, connect, 1.0)
            self.assertEqual(statuses(data, closed), [404], data[:300])

    def test_answers_in_order_then_the_refusal(self) -> None:
        """Item 4: the 400 for garbage went out before the answer to the request before it."""
        for http in STACKS:
            port = self.serve(http).port
            data, closed = exchange(port, post() + b"GARBAGE\r\n\r\n")
            responses = parse_responses(data, closed=True)
            self.assertEqual([r.status for r in responses], [200, 400], data[:400])
            self.assertEqual(message(responses[1]), "Malformed HTTP request.")
            self.assertTrue(closed)
            if http != "twisted":  # the lean channel, on either parser
                # Content-Length shorter than the body: its own 400 first, then the rest's.
                data, closed = exchange(port, post(length=10))
                first, second = parse_responses(data, closed=True)
                self.assertIn("could not parse the JSON body", message(first))
                self.assertEqual(message(second), "Malformed HTTP request.")

    def test_no_100_continue_before_a_refusal(self) -> None:
        """Item 5: Expect: 100-continue and an oversized body got 100, then 413."""
        for http in STACKS:
            port = self.serve(http).port
            head = post(b"", extra=b"Expect: 100-continue\r\n", length=100_000_000)
            data, closed = exchange(port, head)
            self.assertTrue(closed)
            self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:100])
            self.assertNotIn(b"100 Continue", data)
            # A body that will be read: 100 Continue first.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(post(b"", extra=b"Expect: 100-continue\r\n", length=len(BODY)))
                self.assertEqual(sock.recv(4096), b"HTTP/1.1 100 Continue\r\n\r\n")
                sock.sendall(BODY)
                self.assertTrue(sock.recv(65536).startswith(b"HTTP/1.1 200 "))

    def test_http10_keep_alive_host_and_http09(self) -> None:
        """Item 6: HTTP/1.0 keep-alive was kept without saying so; no Host, HTTP/0.9 served."""
        for http in STACKS:
            port = self.serve(http).port
            data, closed = exchange(port, b"GET /health HTTP/1.0\r\n\r\n")
            self.assertEqual((statuses(data), closed), ([200], True))
            data, closed = exchange(port, b"GET /health HTTP/1.1\r\n\r\n")
            self.assertEqual(statuses(data), [400], data[:300])
            self.assertIn("Host", message(parse_responses(data, closed=True)[0]))
            self.assertTrue(closed)
            started = time.monotonic()
            data, closed = exchange(port, b"GET /health\r\n")
            self.assertEqual((statuses(data), closed), ([400], True), data[:300])
            self.assertLess(time.monotonic() - started, 2.0)
            if http != "twisted":  # the lean channel, on either parser
                # Kept alive when asked for, and said so (ab -k waits for it otherwise);
                # twisted.web closes HTTP/1.0 connections whatever they ask.
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    for _ in range(3):
                        sock.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                        [response] = parse_responses(sock.recv(65536))
                        self.assertEqual(response.header("Connection"), "keep-alive")


# --------------------------------------------------------------------------
# Item 10: a request pipelined behind the last stream of a drain


class DrainPipelineTests(ServerCase):
    def run_stack(self, http: str) -> None:
        server = self.serve(http, "--itl", "20", "--grace-period", "10")
        assert server.process is not None
        stream = json.dumps(
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 40,
                "stream": True,
            }
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(post(stream) + get(b"/v1/models"))
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            data, closed = read_until_closed(sock, 10.0)
        self.assertTrue(closed)
        first, second = parse_responses(data, closed=True)
        self.assertEqual(first.status, 200)
        self.assertIn("[DONE]", first.events())
        self.assertEqual(second.status, 503)
        self.assertEqual(second.json()["error"]["code"], "server_shutting_down")
        self.assertEqual(second.header("Connection"), "close")
        self.assertEqual(server.wait(15), 0)
        self.assertNotIn("grace period over", server.stdout)
        self.assertQuietLog(server)

    def test_lean(self) -> None:
        self.run_stack("lean")

    def test_lean_python(self) -> None:
        self.run_stack("lean-python")

    def test_twisted(self) -> None:
        self.run_stack("twisted")


# --------------------------------------------------------------------------
# Item 11: keep-alive connections end, so clients reconnect (and --workers rebalance)


class KeepAliveLimitTests(ServerCase):
    def run_stack(self, http: str) -> None:
        server = self.serve(http, "--keepalive-requests", "3")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            for n in (1, 2, 3):
                sock.sendall(get())
                data = b""
                while not (data and parse_responses(data)[-1].complete):
                    data += sock.recv(65536)
                [response] = parse_responses(data)
                self.assertEqual(response.status, 200)
                self.assertEqual(response.header("Connection"), "close" if n == 3 else None)
            rest, closed = read_until_closed(sock, 3.0)
        self.assertEqual((rest, closed), (b"", True))

    def test_lean(self) -> None:
        self.run_stack("lean")

    def test_lean_python(self) -> None:
        self.run_stack("lean-python")

    def test_twisted(self) -> None:
        self.run_stack("twisted")

    def test_keepalive_time_in_memory(self) -> None:
        for http in STACKS:
            clock = Clock()
            clock.advance(EPOCH)
            service = make_service(clock, http=http, keepalive_time=5.0, keepalive_requests=0)
            connection = Client(service).connect()
            connection.send(get())
            clock.advance(0)
            self.assertIsNone(connection.response().header("Connection"), http)
            clock.advance(5.0)
            connection.send(get())
            clock.advance(0)
            responses = connection.responses()
            self.assertEqual(len(responses), 2, http)
            self.assertEqual(responses[1].header("Connection"), "close", http)
            self.assertTrue(connection.closing, http)


# --------------------------------------------------------------------------
# Connections are freed by refcounting, refused or not


class ChannelsFreedTests(SynchronousTestCase):
    """
    A connection left in a reference cycle waits for the cyclic GC, whose
    thresholds the service raises: a flood of 11,000 refused connections kept
    ~15 MB until one ran (the lean parser holds its channel's bound methods, a
    refusal's traceback held the channel, twisted.web's body decoder too).
    """

    def test_freed_without_the_cyclic_gc(self) -> None:
        if platform.python_implementation() != "CPython":
            self.skipTest("refcounting frees objects at once on CPython only")
        cases = {
            "served": get(),
            "keyless body": post(b"x" * 100, length=5000),
            "malformed": get() + b"GARBAGE\r\n\r\n",
            "too large": post(b"", length=100_000_000),
        }
        gc.disable()
        self.addCleanup(gc.enable)
        for http in STACKS:
            service = make_service(http=http, api_keys=(ApiKey(KEY),))
            for name, data in cases.items():
                connection = Client(service).connect()
                connection.send(data)
                service.clock.advance(0)
                self.assertTrue(connection.responses(), f"{http} {name}")
                connection.disconnect()
                # The in-memory transport's own references, which a TCP one drops.
                connection.transport.closer = connection.transport.producer = None
                channel = weakref.ref(connection.protocol)
                del connection
                service.clock.advance(guard.LINGER)
                self.assertIsNone(channel(), f"{http} {name}: not freed")


# --------------------------------------------------------------------------
# The connection cap's default, and the memory of large bodies


class ConnectionCapTests(SynchronousTestCase):
    def test_auto_is_below_the_descriptor_limit(self) -> None:
        self.assertEqual(guard.connection_cap(0), 0)
        self.assertEqual(guard.connection_cap(50), 50)
        cap = guard.connection_cap(-1)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(cap, max(soft - guard.FD_RESERVE, 16))
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(soft, min(hard, guard.MAX_FDS))  # raised to the hard limit
        service = make_service()  # the default: auto
        self.assertEqual(service.site.connections.max_connections, cap)
        settings = load_settings({"max_connections": "auto"}, {})
        self.assertEqual(settings.server.max_connections, AUTO_CONNECTIONS)
        self.assertIn("max_connections=auto ", describe(settings))
        self.assertEqual(load_settings({"max_connections": "0"}, {}).server.max_connections, 0)


class LargeBodiesTests(SynchronousTestCase):
    class Heap:
        def __init__(self) -> None:
            self.trims = 0

        def trim(self) -> None:
            self.trims += 1

    def test_trim_after_enough_large_bodies(self) -> None:
        clock = Clock()
        fake = self.Heap()
        bodies = LargeBodies(clock, fake)  # type: ignore[arg-type]
        for _ in range(heap.TRIM_BODY_BYTES // (16 << 20) - 1):
            bodies.freed(16 << 20)
        self.assertEqual(clock.getDelayedCalls(), [])
        bodies.freed(16 << 20)
        bodies.freed(16 << 20)  # one trim pending at a time
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(heap.TRIM_BODY_DELAY)
        self.assertEqual((fake.trims, bodies.trims), (1, 1))
        bodies.freed(16 << 20)  # a new count
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stacks_note_large_bodies(self) -> None:
        for http in STACKS:
            service = make_service(http=http, max_body_size=4 << 20)
            noted: list[int] = []
            self.patch(service.site.large_bodies, "freed", noted.append)
            body = json.dumps({"model": "gpt-4o", "messages": [], "pad": "x" * (2 << 20)})
            response = Client(service).post("/v1/chat/completions", body=body.encode())
            self.assertEqual(response.status, 400, http)
            self.assertEqual(noted, [len(body)], http)
