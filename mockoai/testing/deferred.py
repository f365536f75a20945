# -*- test-case-name: tests.test_testing -*-
"""
The test server for Twisted code (trial): L{start_server} spawns
``twistd -n mockoai`` with the reactor's C{spawnProcess} and fires once the
server logged that it is ready; L{ReactorServer.stop} fires once it has
drained and exited, and fails with L{ServerError} if it did not exit 0 or
logged an error.

The reactor watches the child's output and exit, so nothing waits in a
thread and nothing blocks the reactor (the blocking L{MockoaiServer}
would stall a trial test's own reactor for the ~1 s start).  The HTTP
helpers are the reactor's too: L{twisted.web.client.Agent} on connections
that close after each answer, so a test ends with a clean reactor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer  # type: ignore[import-untyped]

from mockoai.testing.server import (
    READY,
    Reply,
    ServerBase,
    ServerError,
    _body,
    admin_answer,
    check_exit,
    child_environment,
    free_port,
)

_READY = READY.encode()


class _ServerProcess(ProcessProtocol):
    """Collects the server's output; knows when it is ready and when it ended."""

    def __init__(self, processes: int) -> None:
        #: Serving processes that log that they are ready (``--workers``).
        self.processes = processes
        #: What C{spawnProcess} returned (an C{IProcessTransport}).
        self.process: Any = None
        self.output: list[bytes] = []
        #: Fires True once the server is ready, False if it ends before.
        self.started: Deferred[bool] = Deferred()
        self.code: int | None = None
        self.ended = False
        self._waiting: list[Deferred[int | None]] = []

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)
        # Startup output is short: count in all of it (a line may span chunks).
        if not self.started.called and b"".join(self.output).count(_READY) >= self.processes:
            self.started.callback(True)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        if code is None:  # killed by a signal: subprocess's convention
            code = -(getattr(value, "signal", None) or 0)
        self.code = code
        self.ended = True
        if not self.started.called:
            self.started.callback(False)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(code)

    def when_ended(self) -> Deferred[int | None]:
        """A fresh Deferred of the exit status (a timeout on it cancels only it)."""
        if self.ended:
            return succeed(self.code)
        d: Deferred[int | None] = Deferred()
        self._waiting.append(d)
        return d

    def signal(self, name: str) -> None:
        if not self.ended and self.process is not None:
            with contextlib.suppress(ProcessExitedAlready):
                self.process.signalProcess(name)


@implementer(IBodyProducer)
class _Bytes:
    """A request body that is already all there."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Body(Protocol):
    """
    Reads a response's body (C{readBody} warns about the transports the
    pool gives a finished response).
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


class ReactorServer(ServerBase):
    """
    ``twistd -n mockoai`` on a free loopback port, driven by the reactor.
    Use L{start_server}; ``get``, ``post`` and ``stop`` return Deferreds.
    The SDK's blocking ``openai_client()`` would block the reactor: call it
    with C{deferToThread}, or use L{get} and L{post}.

    The admin API (docs/faults.md): L{set_rules}, L{rules}, L{journal},
    L{verdict}, L{reset}, L{set_model}, each a Deferred of its JSON answer.
    """

    def __init__(
        self,
        reactor: Any = None,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        **settings: object,
    ) -> None:
        super().__init__(env, settings)
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self.reactor = reactor
        self.start_timeout = start_timeout
        self.returncode: int | None = None
        self._process: _ServerProcess | None = None
        self._pool: HTTPConnectionPool | None = None

    @property
    def log(self) -> str:
        """What the server has logged so far (stdout and stderr)."""
        if self._process is None:
            return ""
        return b"".join(self._process.output).decode("utf-8", "replace")

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Deferred[ReactorServer]:
        """Fires with this server once it serves (a few tries if its port was taken)."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> ReactorServer:
        if self._process is not None:
            raise RuntimeError("this server was started already")
        env = child_environment(self.env)
        for attempt in range(3):
            self.port = free_port()
            process = self._process = _ServerProcess(self.processes)
            command = self.command(self.port)
            process.process = self.reactor.spawnProcess(process, command[0], command, env=env)
            process.process.closeStdin()
            started = process.started
            started.addTimeout(self.start_timeout, self.reactor)
            try:
                ready = await started
            except defer.TimeoutError:
                process.signal("KILL")
                self.returncode = await process.when_ended()
                raise ServerError(
                    f"the mockoai server was not ready within {self.start_timeout} s"
                    f"\n--- server log ---\n{self.log}"
                ) from None
            if ready:
                return self
            self.returncode = process.code
            if "Address already in use" in self.log and attempt < 2:
                continue
            raise ServerError(
                f"the mockoai server exited with status {process.code} before it was "
                f"ready\n--- server log ---\n{self.log}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 30.0) -> Deferred[str]:
        """
        SIGTERM (the server drains in-flight requests for its grace period);
        fires with the server's log once it exited, or fails with
        L{ServerError} if it did not exit 0 within ``timeout`` s or logged
        an error.
        """
        return Deferred.fromCoroutine(self._stop(timeout))

    async def _stop(self, timeout: float) -> str:
        process = self._process
        if process is None:
            return ""
        self._close_clients()
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        process.signal("TERM")
        ended = process.when_ended()
        ended.addTimeout(timeout, self.reactor)
        try:
            self.returncode = await ended
        except defer.TimeoutError:
            process.signal("KILL")
            self.returncode = await process.when_ended()
            raise ServerError(
                f"the mockoai server did not exit within {timeout} s of SIGTERM"
                f"\n--- server log ---\n{self.log}"
            ) from None
        check_exit(self.returncode, self.log, self.port)
        return self.log

    def kill(self) -> Deferred[int | None]:
        """SIGKILL, for a server that must go now; fires with its exit status."""
        if self._process is None:
            return succeed(None)
        self._process.signal("KILL")
        return self._process.when_ended()

    # -- plain HTTP --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Deferred[Reply]:
        """One request; fires with the whole answer (a stream too)."""
        return Deferred.fromCoroutine(self._request(method, path, body, headers))

    async def _request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> Reply:
        if self._pool is None:
            self._pool = HTTPConnectionPool(self.reactor, persistent=False)
        agent = Agent(self.reactor, pool=self._pool)
        url = f"{self.url}/{path.lstrip('/')}".encode("ascii")
        raw = Headers()
        for name, value in (headers or {}).items():
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        producer = None if body is None else cast(IBodyProducer, _Bytes(body))
        response: Any = await agent.request(method.encode("ascii"), url, raw, producer)
        body_read: Deferred[bytes] = Deferred()
        response.deliverBody(_Body(body_read))
        data = await body_read
        pairs = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, values in response.headers.getAllRawHeaders()
            for value in values
        )
        return Reply(response.code, pairs, data)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Deferred[Reply]:
        """``GET path`` (from the server's root: ``/health``, ``/v1/models``)."""
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, json: object = None, headers: Mapping[str, str] | None = None
    ) -> Deferred[Reply]:
        """``POST path`` with ``json`` as the body."""
        body, content = _body(json)
        return self.request("POST", path, body, {**content, **(headers or {})})

    # -- the admin API (docs/faults.md) --------------------------------------

    def _admin(self, call: str, document: object = None, suffix: str = "") -> Deferred[Any]:
        method, path, body, headers = self._admin_request(call, document, suffix)
        return self.request(method, path, body, headers).addCallback(admin_answer, method, path)

    def set_rules(self, *rules: Mapping[str, object], seed: int = 0) -> Deferred[Any]:
        """Put ``rules`` in force (in every worker); their times count from now."""
        return self._admin("set_rules", {"seed": seed, "rules": list(rules)})

    def rules(self) -> Deferred[Any]:
        return self._admin("rules")

    def journal(self, limit: int = 0) -> Deferred[Any]:
        """The last requests (every worker's), oldest first."""
        suffix = f"?limit={limit}" if limit else ""
        return self._admin("journal", suffix=suffix).addCallback(lambda a: a["requests"])

    def verdict(self) -> Deferred[Any]:
        return self._admin("verdict")

    def reset(self) -> Deferred[Any]:
        return self._admin("reset")

    def set_model(self, model: str, **settings: object) -> Deferred[Any]:
        return self._admin("set_model", settings, suffix=model)


def start_server(
    reactor: Any = None,
    *,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
    **settings: object,
) -> Deferred[ReactorServer]:
    """
    Start a mockoai server with ``settings`` (as L{server_arguments} maps
    them); fires with the L{ReactorServer} once it serves.
    """
    return ReactorServer(reactor, env=env, start_timeout=start_timeout, **settings).start()


__all__ = ["ReactorServer", "ServerError", "start_server"]
