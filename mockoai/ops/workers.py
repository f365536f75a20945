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

The kernel balances connections, not requests: after a restart the
keep-alive clients stay where they were, so ``--keepalive-requests``
(L{mockoai.wire.site}) closes each connection now and then and they spread
again.

The workers meet in a run directory (their state sockets, their pids).  A
supervisor killed with SIGKILL cannot remove it, and its workers, told by
the kernel to drain (L{die_with_parent}), would write to a pipe nobody
reads: so a worker whose supervisor is gone logs to ``worker-I.log`` in the
run directory instead, and the next supervisor to start relays those last
lines into its own log and removes the directory, once those workers have
exited.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
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
#: What the kernel sends a worker when its supervisor dies: not SIGTERM,
#: which is also how a live supervisor stops a worker (see L{die_with_parent}).
_PARENT_DIED: int = getattr(signal, "SIGRTMIN", 0)
_KILL_AFTER = 5.0

#: Run directories are ``mockoai-workers-*`` in the temporary directory.
RUN_DIR_PREFIX = "mockoai-workers-"
#: In a run directory: the supervisor's process, each worker's, and the log a
#: worker writes once its supervisor is gone.
_SUPERVISOR = "supervisor.pid"
_WORKER_PID = "worker-{index}.pid"
_WORKER_LOG = "worker-{index}.log"
#: Last lines relayed from each worker log of a stale run directory.
RELAYED_LINES = 200
#: Seconds between looks at a stale run directory whose workers still drain.
_STALE_RECHECK = 1.0


def _started(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot; 0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _mark(path: str, pid: int) -> None:
    """Write ``pid`` and its start time to ``path`` (so a reused pid is told apart)."""
    with open(path, "w") as mark:
        mark.write(f"{pid} {_started(pid)}\n")


def _alive(path: str) -> bool:
    """Whether the process marked in ``path`` still runs (a missing mark: no)."""
    try:
        with open(path) as mark:
            pid_text, started_text = mark.read().split()
        pid, started = int(pid_text), int(started_text)
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc: trust the pid
    return fields[0] != "Z" and (not started or int(fields[19]) == started)


def make_run_dir() -> str:
    """A new run directory for this supervisor's workers, marked with its pid."""
    path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)
    _mark(os.path.join(path, _SUPERVISOR), os.getpid())
    return path


#: Seconds a run directory without its supervisor's mark may be another
#: supervisor's, between making it and marking it, before it counts as stale.
UNMARKED_GRACE = 60.0


def stale_run_dirs(parent: str | None = None, now: float | None = None) -> list[str]:
    """
    Our run directories whose supervisor is gone (killed: it could not
    remove them): its mark names a process that is gone, or there is no
    mark and the directory is older than L{UNMARKED_GRACE} (a supervisor
    starting beside us has made its directory but not marked it yet).
    """
    now = time.time() if now is None else now
    stale = []
    for path in sorted(
        glob.glob(os.path.join(parent or tempfile.gettempdir(), RUN_DIR_PREFIX + "*"))
    ):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if info.st_uid != os.getuid() or not os.path.isdir(path):
            continue
        mark = os.path.join(path, _SUPERVISOR)
        if os.path.exists(mark):
            if not _alive(mark):
                stale.append(path)
        elif now - info.st_mtime > UNMARKED_GRACE:
            stale.append(path)
    return stale


def _workers_alive(run_dir: str) -> bool:
    return any(_alive(mark) for mark in glob.glob(os.path.join(run_dir, "worker-*.pid")))


def _last_lines(path: str, count: int) -> list[str]:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 256 * count))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return lines[-count:]


def serve_as_worker(supervisor: int, run_dir: str | None, index: int | None, reactor: Any) -> None:
    """
    Set up this process as worker ``index`` of ``supervisor``: leave its pid
    in the run directory, and drain when the supervisor dies
    (L{die_with_parent}), logging to the run directory from then on instead
    of to the pipe it no longer reads.
    """
    log_path = None
    if run_dir is not None and index is not None:
        with contextlib.suppress(OSError):
            _mark(os.path.join(run_dir, _WORKER_PID.format(index=index)), os.getpid())
        log_path = os.path.join(run_dir, _WORKER_LOG.format(index=index))

    def orphaned() -> None:
        # Where the kernel cannot tell us (not Linux), a worker stopped
        # after its supervisor died still keeps its last lines.
        if log_path is not None and os.getppid() != supervisor:
            _log_to(log_path)

    reactor.addSystemEventTrigger("before", "shutdown", orphaned)
    die_with_parent(supervisor, reactor, log_path)


def _log_to(path: str) -> None:
    """Point this process's stdout and stderr (where twistd -n logs) at ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


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


def die_with_parent(supervisor: int, reactor: Any, log_path: str | None = None) -> None:
    """
    Have the kernel tell this worker when its supervisor dies, and drain
    then: a supervisor killed with SIGKILL cannot stop its workers, which
    would otherwise keep serving the port forever.  From that moment on the
    worker logs to ``log_path`` (when given), not to the dead supervisor's
    pipe.  Linux only; elsewhere a no-op.

    The kernel's word is L{_PARENT_DIED}, not SIGTERM, and the worker acts
    on the signal, not on C{getppid()}: the kernel sends it when the
    I{thread} that started the worker exits (prctl(2)), and a killed
    supervisor with threads loses its main thread first, while the worker,
    handed to a sibling thread, still sees the supervisor's pid as its
    parent; it sends it again once the last thread is gone.  A SIGTERM
    could be either that or a live supervisor's stop.  The handler goes in
    before the kernel is asked, so the signal's default action (the
    process ends, unlogged) never applies, not even before the reactor runs.
    """
    if not sys.platform.startswith("linux") or not _PARENT_DIED:
        return
    told = False

    def drain() -> None:
        _log.warn("supervisor {pid} is gone: draining, then exiting", pid=supervisor)
        with contextlib.suppress(net_error.ReactorNotRunning):
            reactor.stop()

    def on_parent_died(signum: int, frame: Any) -> None:
        nonlocal told
        if told:  # the second word, once the supervisor's last thread is gone
            return
        told = True
        with contextlib.suppress(OSError, AttributeError):
            libc.prctl(_PR_SET_PDEATHSIG, 0)
        if log_path is not None:
            _log_to(log_path)
        # As twisted's own SIGTERM handler: out of the signal handler, and
        # queued until the reactor runs when it does not yet.
        reactor.callFromThread(drain)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        signal.signal(_PARENT_DIED, on_parent_died)
        libc.prctl(_PR_SET_PDEATHSIG, _PARENT_DIED)
    except (OSError, AttributeError, ValueError):
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), _PARENT_DIED)


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
        for path in stale_run_dirs(os.path.dirname(self.run_dir) if self.run_dir else None):
            if path != self.run_dir:
                self.clean(path, self.grace_period + 2 * _KILL_AFTER)

    def clean(self, path: str, patience: float) -> None:
        """
        Relay the last lines of a killed supervisor's workers and remove its
        run directory, once those workers have exited (they drain first).
        """
        if _workers_alive(path) and patience > 0:
            self.reactor.callLater(_STALE_RECHECK, self.clean, path, patience - _STALE_RECHECK)
            return
        logs = sorted(glob.glob(os.path.join(path, "worker-*.log")))
        _log.warn(
            "removing {path}, left by a supervisor that was killed{logs}",
            path=path,
            logs="; its workers' last lines follow" if logs else "",
        )
        for log_path in logs:
            name = os.path.basename(log_path)[: -len(".log")]
            for line in _last_lines(log_path, RELAYED_LINES):
                _log.info("previous {name}: {line}", name=name.replace("-", " "), line=line)
        shutil.rmtree(path, ignore_errors=True)

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
