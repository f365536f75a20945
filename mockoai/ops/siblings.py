# -*- test-case-name: tests.test_metrics -*-
"""
``--workers N``: every worker's numbers in every scrape.

The kernel hands a scrape of /metrics (or /stats) to one worker at random,
so each worker also listens on a private unix socket in a run directory
the supervisor makes (``worker-I.sock``); a connection there gets this
worker's raw state as one JSON document and is closed.  The worker that
serves a scrape reads its siblings' states in parallel and merges them
with its own.  A sibling that does not answer in time (restarting, say) is
left out of that scrape, not waited for.

Workers also answer each other's questions about what one of them holds
(a stored response, L{mockoai.dialects.openai.responses_store}): a second
socket, ``ask-I.sock``, takes one JSON line ``[topic, question, subject]``
and answers with one JSON document, from the handler registered for the
topic in L{Siblings.answers}.  The asker knows which worker to ask (the
subject's id says), so one question is one connection to one worker.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ujson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from mockoai.interfaces import Transport

_log = Logger(namespace="mockoai")

#: Seconds a scrape waits for a sibling.
TIMEOUT = 2.0

State = dict[str, Any]


def socket_path(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, f"worker-{index}.sock")


def ask_path(run_dir: str, index: int) -> str:
    """Where worker ``index`` takes questions (not ``worker-*``: scrapes glob those)."""
    return os.path.join(run_dir, f"ask-{index}.sock")


#: The longest question a worker reads (a topic, a verb and an id).
_QUESTION_BYTES = 4096

#: What answers a topic's questions: (question, subject) -> a JSON value.
Answerer = Callable[[str, str], Any]


class _Send(Protocol):
    transport: Transport | None  # type: ignore[assignment]

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(ujson.dumps(self.factory.state()).encode())
        self.transport.loseConnection()


class _Receive(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: Deferred[State] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            try:
                self.done.callback(ujson.loads(b"".join(self.chunks)))
            except ValueError:
                self.done.errback()


class _Answer(Protocol):
    """One question, read as a line, answered with one JSON document."""

    transport: Transport | None  # type: ignore[assignment]

    def __init__(self, answers: dict[str, Answerer]) -> None:
        self.answers = answers
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer:
            if len(self.buffer) > _QUESTION_BYTES and self.transport is not None:
                self.transport.abortConnection()
            return
        line = self.buffer.split(b"\n", 1)[0]
        try:
            topic, question, subject = ujson.loads(line)
            answer = self.answers[topic](question, subject)
        except Exception:
            _log.failure("a sibling's question {line!r}", line=line[:200])
            answer = None
        assert self.transport is not None
        self.transport.write(ujson.dumps(answer).encode())
        self.transport.loseConnection()


class _Ask(Protocol):
    """Asks one question, and hears the answer out."""

    transport: Transport | None  # type: ignore[assignment]

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.chunks: list[bytes] = []
        self.done: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            try:
                self.done.callback(ujson.loads(b"".join(self.chunks)))
            except ValueError:
                self.done.errback()


class Siblings(Service):
    """Serves this worker's state to its siblings, and gathers theirs."""

    def __init__(self, reactor: Any, run_dir: str, index: int, state: Callable[[], State]) -> None:
        self.reactor = reactor
        self.run_dir = run_dir
        self.index = index
        self.path = socket_path(run_dir, index)
        self.state = state
        self._port: Any = None
        #: Who answers the questions of each topic (``responses``: the response store).
        self.answers: dict[str, Answerer] = {}
        self._ask_port: Any = None

    def startService(self) -> None:
        super().startService()
        # A worker restarted in the same slot finds its predecessor's socket.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        factory = Factory.forProtocol(_Send)
        factory.state = self.state  # type: ignore[attr-defined]
        self._port = self.reactor.listenUNIX(self.path, factory, mode=0o600)
        asked = ask_path(self.run_dir, self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(asked)
        answers = self.answers
        self._ask_port = self.reactor.listenUNIX(
            asked, Factory.forProtocol(lambda: _Answer(answers)), mode=0o600
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        ports = [p for p in (self._port, self._ask_port) if p is not None]
        self._port = self._ask_port = None
        if not ports:
            return None
        return DeferredList([p.stopListening() for p in ports]).addCallback(lambda _: None)

    def ask(
        self, index: int, topic: str, question: str, subject: str, timeout: float = TIMEOUT
    ) -> Deferred[Any]:
        """Worker ``index``'s answer about ``subject`` (a failure if it cannot be reached)."""
        asking = _Ask(ujson.dumps([topic, question, subject]).encode() + b"\n")
        endpoint = UNIXClientEndpoint(self.reactor, ask_path(self.run_dir, index), timeout=timeout)

        def connected(protocol: _Ask) -> Deferred[Any]:
            def give_up(failure: Failure) -> Failure:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
                return failure

            return protocol.done.addTimeout(timeout, self.reactor).addErrback(give_up)

        answered: Deferred[Any] = connectProtocol(endpoint, asking).addCallback(connected)
        return answered

    def others(self) -> list[str]:
        own = os.path.basename(self.path)
        paths = glob.glob(os.path.join(self.run_dir, "worker-*.sock"))
        return sorted(p for p in paths if os.path.basename(p) != own)

    def gather(self, timeout: float = TIMEOUT) -> Deferred[list[State]]:
        """The states of the siblings that answer within ``timeout``."""
        waits = [self._fetch(path, timeout) for path in self.others()]
        gathered: Deferred[list[State]] = DeferredList(waits, consumeErrors=True).addCallback(
            lambda results: [state for ok, state in results if ok]
        )
        return gathered

    def _fetch(self, path: str, timeout: float) -> Deferred[State]:
        receiver = _Receive()
        endpoint = UNIXClientEndpoint(self.reactor, path, timeout=timeout)
        connecting = connectProtocol(endpoint, receiver)

        def connected(protocol: _Receive) -> Deferred[State]:
            def give_up(failure: Failure) -> Failure:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
                return failure

            return protocol.done.addTimeout(timeout, self.reactor).addErrback(give_up)

        fetched: Deferred[State] = connecting.addCallback(connected)
        fetched.addErrback(self._missed, path)
        return fetched

    def _missed(self, failure: Failure, path: str) -> Failure:
        _log.debug("no state from {path}: {why}", path=path, why=failure.getErrorMessage())
        return failure
