"""
mockoai's poll step (L{mockoai.wire.poll}): Twisted's epoll step without the
per-descriptor logging context, and the answers to one poll's reads held
until the last read is handled.

The step is tested on a fake reactor (its poller and descriptors), the held
writes on the lean channel with a socket that records its sends, and the
whole under ``twistd`` on a real socket, with the step on and off.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mockoai.wire import poll
from mockoai.wire.poll import CLOSED, LeanPoll, LeanPollService, SendBatch
from tests.optional import STACKS
from tests.support import Connection, NoDelayTransport, TwistdProcess, make_service, parse_responses


class FakePoller:
    def __init__(self, events: list[tuple[int, int]] | Exception) -> None:
        self.events = events
        self.asked: list[tuple[float, int]] = []

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        self.asked.append((timeout, most))
        if isinstance(self.events, Exception):
            raise self.events
        return self.events


class FakeReactor:
    """What L{LeanPoll.step} uses of an ``EPollReactor``."""

    def __init__(self, poller: FakePoller, selectables: dict[int, Any]) -> None:
        self._poller = poller
        self._selectables = selectables
        self.handled: list[tuple[Any, int, int]] = []
        self.fail_on: set[int] = set()
        self.batch_open_while: list[bool] = []
        self.poll: LeanPoll | None = None

    def _doReadOrWrite(self, selectable: Any, fd: int, event: int) -> None:
        assert self.poll is not None
        self.batch_open_while.append(self.poll.batch.open)
        self.handled.append((selectable, fd, event))
        if fd in self.fail_on:
            raise RuntimeError(f"descriptor {fd} broke")

    def doIteration(self, timeout: float | None) -> None:
        """The reactor's own step (L{poll.install} covers it on the instance)."""


def stepper(events: list[tuple[int, int]] | Exception, fds: list[int]) -> FakeReactor:
    reactor = FakeReactor(FakePoller(events), {fd: f"selectable-{fd}" for fd in fds})
    reactor.poll = LeanPoll(reactor)
    return reactor


class Held:
    """A connection holding writes: records when it is flushed."""

    def __init__(self, name: str, flushed: list[str], fail: bool = False) -> None:
        self.name = name
        self.flushed = flushed
        self.fail = fail

    def flush(self) -> None:
        self.flushed.append(self.name)
        if self.fail:
            raise OSError("gone")


def captured_failures(case: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "mockoai.wire.poll":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class StepTests(SynchronousTestCase):
    """L{LeanPoll.step} handles what the poller returns as Twisted's step does."""

    def test_every_ready_descriptor_handled_in_order(self) -> None:
        reactor = stepper([(5, 1), (7, 4), (6, 1)], [5, 6, 7])
        assert reactor.poll is not None
        reactor.poll.step(0.25)
        self.assertEqual(
            reactor.handled,
            [("selectable-5", 5, 1), ("selectable-7", 7, 4), ("selectable-6", 6, 1)],
        )
        # At most one event per descriptor, and the caller's timeout.
        self.assertEqual(reactor._poller.asked, [(0.25, 3)])

    def test_no_timeout_waits_indefinitely(self) -> None:
        reactor = stepper([], [3])
        assert reactor.poll is not None
        reactor.poll.step(None)
        self.assertEqual(reactor._poller.asked, [(-1, 1)])

    def test_a_descriptor_gone_since_the_poll_is_skipped(self) -> None:
        reactor = stepper([(4, 1), (9, 1), (5, 1)], [4, 5])
        assert reactor.poll is not None
        reactor.poll.step(0)
        self.assertEqual([fd for _, fd, _ in reactor.handled], [4, 5])

    def test_what_escapes_a_descriptor_is_logged_and_the_rest_handled(self) -> None:
        logged = captured_failures(self)
        reactor = stepper([(4, 1), (5, 1)], [4, 5])
        reactor.fail_on = {4}
        assert reactor.poll is not None
        reactor.poll.step(0)
        self.assertEqual([fd for _, fd, _ in reactor.handled], [4, 5])
        self.assertEqual(len(logged), 1)
        self.assertIn("descriptor 4 broke", str(logged[0]["log_failure"].value))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_keyboard_interrupt_is_not_swallowed(self) -> None:
        reactor = stepper([(4, 1)], [4])
        assert reactor.poll is not None

        def interrupt(selectable: Any, fd: int, event: int) -> None:
            raise KeyboardInterrupt()

        reactor._doReadOrWrite = interrupt  # type: ignore[method-assign]
        self.assertRaises(KeyboardInterrupt, reactor.poll.step, 0)
        self.assertFalse(reactor.poll.batch.open)

    def test_interrupted_poll_returns_other_errors_raise(self) -> None:
        reactor = stepper(OSError(errno.EINTR, "interrupted"), [4])
        assert reactor.poll is not None
        reactor.poll.step(0)
        self.assertEqual(reactor.handled, [])
        reactor._poller.events = OSError(errno.EBADF, "bad descriptor")
        self.assertRaises(OSError, reactor.poll.step, 0)

    def test_batch_open_while_handling_and_flushed_after_the_last(self) -> None:
        reactor = stepper([(4, 1), (5, 1)], [4, 5])
        poll_ = reactor.poll
        assert poll_ is not None
        flushed: list[str] = []
        handled = reactor._doReadOrWrite

        def handle(selectable: Any, fd: int, event: int) -> None:
            handled(selectable, fd, event)
            poll_.batch.held.append(Held(f"conn-{fd}", flushed))
            self.assertEqual(flushed, [])  # nothing leaves before the last read

        reactor._doReadOrWrite = handle  # type: ignore[method-assign]
        poll_.step(0)
        self.assertEqual(reactor.batch_open_while, [True, True])
        self.assertEqual(flushed, ["conn-4", "conn-5"])
        self.assertFalse(poll_.batch.open)
        self.assertEqual(poll_.batch.held, [])


class SendBatchTests(SynchronousTestCase):
    def test_one_failing_flush_is_logged_the_others_still_sent(self) -> None:
        logged = captured_failures(self)
        batch = SendBatch()
        flushed: list[str] = []
        batch.held += [Held("a", flushed), Held("b", flushed, fail=True), Held("c", flushed)]
        batch.flush()
        self.assertEqual(flushed, ["a", "b", "c"])
        self.assertEqual(batch.held, [])
        self.assertEqual(len(logged), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_held_answers_sent_once_the_limit_of_connections_hold_some(self) -> None:
        batch = SendBatch(limit=3)
        flushed: list[str] = []
        batch.hold(Held("a", flushed))
        batch.hold(Held("b", flushed))
        self.assertEqual(flushed, [])
        batch.hold(Held("c", flushed))
        self.assertEqual(flushed, ["a", "b", "c"])  # the step goes on with none held
        self.assertEqual(batch.held, [])
        batch.hold(Held("d", flushed))
        batch.flush()
        self.assertEqual(flushed, ["a", "b", "c", "d"])

    def test_default_limit(self) -> None:
        self.assertEqual(SendBatch().limit, poll.HOLD_LIMIT)
        self.assertGreater(poll.HOLD_LIMIT, 1)


class InstallTests(SynchronousTestCase):
    def test_installed_once_and_given_back_after_the_last_user(self) -> None:
        reactor = FakeReactor(FakePoller([]), {})
        first = poll.install(reactor)
        self.assertEqual(reactor.doIteration, first.step)
        second = poll.install(reactor)
        self.assertIs(second, first)
        poll.uninstall(first)
        self.assertEqual(reactor.doIteration, first.step)
        poll.uninstall(second)
        self.assertNotIn("doIteration", vars(reactor))
        self.assertEqual(reactor.doIteration.__func__, FakeReactor.doIteration)

    def test_only_the_epoll_reactor_is_stepped(self) -> None:
        from twisted.internet.epollreactor import EPollReactor

        self.assertTrue(poll.steppable(EPollReactor.__new__(EPollReactor)))
        self.assertFalse(poll.steppable(Clock()))
        self.assertFalse(poll.steppable(FakeReactor(FakePoller([]), {})))

    def test_without_epoll_nothing_is_stepped(self) -> None:
        # Where select has no epoll, Twisted's epoll reactor cannot be imported.
        self.patch(sys, "modules", {**sys.modules, "twisted.internet.epollreactor": None})
        self.assertFalse(poll.steppable(Clock()))

    def test_service_on_another_reactor_leaves_the_batch_closed(self) -> None:
        service = make_service()  # a Clock: nothing to step
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIs(service.site.batch, CLOSED)
        self.assertFalse(any(isinstance(s, LeanPollService) and s.poll for s in service))

    def test_off_adds_no_service(self) -> None:
        service = make_service(lean_poll=False)
        self.assertFalse(any(isinstance(s, LeanPollService) for s in service))
        self.assertTrue(any(isinstance(s, LeanPollService) for s in make_service()))


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)


class SocketTransport(NoDelayTransport):
    """A StringTransport with what the lean channel reads of a TCP transport's buffer."""

    _tempDataLen = 0
    offset = 0
    dataBuffer = b""
    _aborting = False

    def __init__(self, events: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def loseConnection(self) -> None:
        self.events.append("close")
        super().loseConnection()


CHAT = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"%sContent-Length: %d\r\n\r\n%s"
)
BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"max_tokens":3}'


def chat(extra: bytes = b"", body: bytes = BODY) -> bytes:
    return CHAT % (extra, len(body), body)


class HeldWritesTests(SynchronousTestCase):
    """The lean channel holds its writes while a batch is open and sends them as one."""

    def connect(self, batch: SendBatch) -> tuple[Connection, RecordingSocket, list[str]]:
        service = make_service(http="lean")
        service.site.batch = batch
        events: list[str] = []
        connection = Connection(service.site, SocketTransport(events))
        sock = RecordingSocket()
        original = sock.send

        def send(data: bytes) -> int:
            events.append("send")
            return original(data)

        sock.send = send  # type: ignore[method-assign]
        connection.protocol._socket = sock
        return connection, sock, events

    def test_pipelined_answers_leave_in_one_send_after_the_batch(self) -> None:
        batch = SendBatch()
        connection, sock, _ = self.connect(batch)
        batch.open = True
        connection.send(chat() + chat() + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(sock.sent, [])
        self.assertEqual(batch.held, [connection.protocol])  # registered once
        batch.open = False
        batch.flush()
        self.assertEqual(len(sock.sent), 1)
        answers = parse_responses(sock.sent[0])
        self.assertEqual([r.status for r in answers], [200, 200, 200])
        self.assertEqual(answers[0].json()["object"], "chat.completion")
        self.assertEqual(answers[2].json(), {"status": "ok"})
        # Outside a batch the next answer is sent at once.
        connection.send(chat())
        self.assertEqual(len(sock.sent), 2)

    def test_connections_past_the_limit_do_not_wait_for_the_step(self) -> None:
        batch = SendBatch(limit=2)
        first, first_sock, _ = self.connect(batch)
        second, second_sock, _ = self.connect(batch)
        third, third_sock, _ = self.connect(batch)
        batch.open = True
        first.send(chat())
        self.assertEqual(first_sock.sent, [])
        second.send(chat())  # the second connection to hold: both go out
        self.assertEqual((len(first_sock.sent), len(second_sock.sent)), (1, 1))
        third.send(chat())
        self.assertEqual(third_sock.sent, [])
        batch.open = False
        batch.flush()
        self.assertEqual(parse_responses(third_sock.sent[0])[0].status, 200)

    def test_closed_batch_sends_at_once(self) -> None:
        connection, sock, _ = self.connect(CLOSED)
        connection.send(chat())
        self.assertEqual(len(sock.sent), 1)
        self.assertEqual(CLOSED.held, [])

    def test_answer_sent_before_the_close_it_asks_for(self) -> None:
        batch = SendBatch()
        connection, sock, events = self.connect(batch)
        batch.open = True
        connection.send(chat(b"Connection: close\r\n"))
        # The close cannot wait for the batch: the answer goes first.
        self.assertEqual(events, ["send", "close"])
        self.assertEqual(parse_responses(sock.sent[0], closed=True)[0].status, 200)
        batch.open = False
        batch.flush()
        self.assertEqual(len(sock.sent), 1)

    def test_refusal_after_held_answers_keeps_their_order(self) -> None:
        batch = SendBatch()
        connection, sock, _ = self.connect(batch)
        batch.open = True
        connection.send(chat() + b"GARBAGE\r\n\r\n")
        batch.open = False
        batch.flush()
        statuses = [r.status for r in parse_responses(b"".join(sock.sent), closed=True)]
        self.assertEqual(statuses, [200, 400])

    def test_lost_connection_drops_what_it_held(self) -> None:
        batch = SendBatch()
        connection, sock, _ = self.connect(batch)
        batch.open = True
        connection.send(chat())
        connection.disconnect()
        batch.open = False
        batch.flush()
        self.assertEqual(sock.sent, [])

    def test_reset_fault_sends_what_is_held_first(self) -> None:
        from mockoai.pipeline import faults

        batch = SendBatch()
        connection, sock, _ = self.connect(batch)
        batch.open = True
        connection.send(chat())
        request = type("R", (), {"channel": connection.protocol})()
        connection.transport.abortConnection = lambda: sock.sent.append(b"<abort>")  # type: ignore[method-assign]
        faults.reset(request)
        self.assertEqual(len(sock.sent), 2)
        self.assertEqual(parse_responses(sock.sent[0])[0].status, 200)
        self.assertEqual(sock.sent[1], b"<abort>")


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` in one write, then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


class TwistdTests(SynchronousTestCase):
    """Under twistd (the epoll reactor), on and off answer alike."""

    def test_pipelined_answers_whole_and_in_order(self) -> None:
        requests = chat() + chat(body=BODY.replace(b'"max_tokens":3', b'"max_tokens":1'))
        requests += b"GET /v1/models HTTP/1.1\r\n"
        requests += b"Host: t\r\nConnection: close\r\n\r\n"
        for setting, stack in [("on", "lean"), ("off", "lean"), ("on", "twisted")]:
            if stack in STACKS:
                server = TwistdProcess(
                    ["--http", stack, "--articles", "64", "--lean-poll", setting]
                )
                server.start()
                self.addCleanup(server.cleanup)
                answers = parse_responses(exchange(server.port, requests), closed=True)
                self.assertEqual([r.status for r in answers], [200, 200, 200], (setting, stack))
                tokens = [r.json()["usage"]["completion_tokens"] for r in answers[:2]]
                self.assertEqual(tokens, [3, 1])
                self.assertEqual(answers[2].json()["object"], "list")
                server.stop()
                self.assertNotIn("Traceback", server.stdout + server.stderr)
