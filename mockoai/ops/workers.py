# -*- test-case-name: tests.test_workers -*-
"""
``--workers N``: N serving processes behind SO_REUSEPORT, supervised.

One Python process is one core.  With SO_REUSEPORT every worker binds its
own listening socket to the same port and the kernel spreads connections
evenly across them (a single shared accept socket balanced badly in our
measurements).  The parent serves nothing: it starts the workers as
``twistd -n mockoai <the same options> --worker-index I``, relays their logs,
restarts one that dies, and on SIGTERM passes the signal on and waits for
every worker to drain.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger(namespace="mockoai")

#: A worker that dies sooner than this after starting is restarted after a
#: pause, so a worker that cannot start does not spin.
_RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1
_KILL_AFTER = 5.0


def reuseport_endpoint(description: str) -> tuple[int, str, int, int]:
    """(family, interface, port, backlog) of a ``tcp:`` endpoint string."""
    endpoint = serverFromString(None, description)
    if isinstance(endpoint, TCP6ServerEndpoint):
        family = socket.AF_INET6
    elif isinstance(endpoint, TCP4ServerEndpoint):
        family = socket.AF_INET
    else:
        raise ValueError(f"--workers needs tcp: endpoints, got {description!r}")
    return family, endpoint._interface, endpoint._port, endpoint._backlog


def die_with_parent(supervisor: int) -> None:
    """
    Have the kernel send this worker SIGTERM (a graceful drain) when its
    supervisor dies: a supervisor killed with SIGKILL cannot stop its
    workers, which would otherwise keep serving the port forever.  Linux
    only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class ReusePortService(Service):
    """Listens on a TCP port with SO_REUSEPORT, shared with sibling workers."""

    def __init__(self, description: str, factory: ServerFactory[Any], reactor: Any) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        family, interface, port, backlog = reuseport_endpoint(self.description)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface or ("::" if family == socket.AF_INET6 else ""), port))
            sock.listen(backlog)
            sock.setblocking(False)
            self.port = self.reactor.adoptStreamPort(sock.fileno(), family, self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()  # type: ignore[misc]
        return None


class _Worker(ProcessProtocol):
    """Relays one worker's output into our log and tells the supervisor it ended."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace")
            # Our own log line carries the time already: drop the worker's.
            stamp, _, rest = text.partition(" ")
            if rest and stamp[:4].isdigit() and "T" in stamp:
                text = rest
            _log.info("worker {i}: {line}", i=self.index, line=text)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class Supervisor(Service):
    """Starts, restarts and stops the worker processes."""

    def __init__(
        self,
        count: int,
        argv: list[str],
        reactor: Any,
        grace_period: float,
        run_dir: str | None = None,
    ) -> None:
        self.count = count
        #: The workers' meeting place (their state sockets); removed at the end.
        self.run_dir = run_dir
        self.argv = argv
        self.reactor = reactor
        self.grace_period = grace_period
        self.workers: dict[int, tuple[_Worker, Any]] = {}
        self.restarts = 0
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        _log.info("supervising {n} workers", n=self.count)
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        if self.stopping:
            return
        worker = _Worker(self, index)
        args = [*self.argv, "--worker-index", str(index)]
        process = self.reactor.spawnProcess(
            worker, sys.executable, [sys.executable, *args], env=os.environ.copy()
        )
        self.workers[index] = (worker, process)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        self.workers.pop(worker.index, None)
        if self.stopping:
            return
        code = getattr(reason.value, "exitCode", None)
        why = (
            f"status {code}"
            if code is not None
            else f"signal {cast(net_error.ProcessTerminated, reason.value).signal}"
        )
        self.restarts += 1
        _log.warn("worker {i} exited ({why}); restarting", i=worker.index, why=why)
        self.reactor.callLater(_RESTART_DELAY, self.spawn, worker.index)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.stopping = True
        waits = []
        for worker, process in list(self.workers.values()):
            waits.append(worker.ended)
            _signal(process, signal.SIGTERM)
            self.reactor.callLater(
                self.grace_period + _KILL_AFTER, _kill_if_running, worker, process
            )
        clean_exit(self.reactor)
        ended = DeferredList(waits)
        if self.run_dir is not None:
            ended.addBoth(_remove, self.run_dir)
        return ended


def clean_exit(reactor: object) -> None:
    """
    A drained shutdown is a success: exit with status 0.  twistd otherwise
    re-raises the stopping signal at exit (status -15), which init systems
    and CI runners read as a crash.  (The supervisor's, and each worker's.)
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]


def _remove(result: object, path: str) -> object:
    shutil.rmtree(path, ignore_errors=True)
    return result


def _signal(process: Any, sig: int) -> None:
    with contextlib.suppress(net_error.ProcessExitedAlready, OSError):
        process.signalProcess(sig)


def _kill_if_running(worker: _Worker, process: Any) -> None:
    if not worker.ended.called:
        _signal(process, signal.SIGKILL)
