"""
--workers: SO_REUSEPORT worker processes under a supervising parent.

End to end: real processes on a loopback port.  Which worker answered is
visible in the x-request-id, whose prefix is random per process.
"""

from __future__ import annotations

import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.service import BACKLOG, with_backlog
from mockoai.ops.workers import RUN_DIR_PREFIX, UNMARKED_GRACE, reuseport_endpoint, stale_run_dirs
from tests.support import TwistdProcess, run_twistd


def _prefix(port: int) -> str:
    """The request-id prefix of whichever worker answers a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        request_id = response.getheader("x-request-id")
    finally:
        connection.close()
    assert request_id is not None and request_id.startswith("req_"), request_id
    return request_id[4:24]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _wait(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class EndpointTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        family, interface, port, backlog = reuseport_endpoint("tcp:3000:interface=127.0.0.1")
        self.assertEqual((family, interface, port), (socket.AF_INET, "127.0.0.1", 3000))
        self.assertGreater(backlog, 0)

    def test_tcp6(self) -> None:
        family, interface, port, _ = reuseport_endpoint("tcp6:3001:interface=\\:\\:1")
        self.assertEqual((family, interface, port), (socket.AF_INET6, "::1", 3001))

    def test_listeners_get_a_deep_backlog(self) -> None:
        """Twisted's default backlog (50) drops SYNs when a load tool connects in bulk."""
        self.assertEqual(with_backlog("tcp:3000"), f"tcp:3000:backlog={BACKLOG}")
        self.assertEqual(with_backlog("tcp:3000:backlog=7"), "tcp:3000:backlog=7")
        self.assertEqual(with_backlog("unix:/tmp/m.sock"), "unix:/tmp/m.sock")
        *_, backlog = reuseport_endpoint(with_backlog("tcp:3000:interface=127.0.0.1"))
        self.assertEqual(backlog, BACKLOG)

    def test_other_kinds_refused(self) -> None:
        with self.assertRaises(ValueError):
            reuseport_endpoint("unix:/tmp/mockoai.sock")

    def test_workers_need_tcp(self) -> None:
        result = run_twistd(
            ["-n", "--pidfile=", "mockoai", "--workers", "2", "--listen", "unix:/tmp/x.sock"]
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("mockoai: error: --workers"), result.stderr)


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = TwistdProcess(["--workers", "2", "--articles", "64"])
        self.addCleanup(self.server.cleanup)
        self.server.start()
        assert self.server.process is not None
        self.parent = self.server.process.pid
        _wait(lambda: len(_children(self.parent)) == 2)
        self.server.wait_for_output("ready in", timeout=15)

    def _prefixes(self, tries: int = 60) -> set[str]:
        return {_prefix(self.server.port) for _ in range(tries)}

    def test_both_workers_serve(self) -> None:
        """The kernel spreads fresh connections over both workers."""
        _wait(lambda: self.server.stdout.count("ready in") >= 2)
        self.assertEqual(len(self._prefixes()), 2)

    def test_crashed_worker_is_restarted(self) -> None:
        _wait(lambda: self.server.stdout.count("ready in") >= 2)
        before = self._prefixes()
        victim = _children(self.parent)[0]
        os.kill(victim, signal.SIGKILL)
        self.server.wait_for_output("exited (signal 9); restarting", timeout=10)
        _wait(lambda: len(_children(self.parent)) == 2 and victim not in _children(self.parent))
        _wait(lambda: self.server.stdout.count("ready in") >= 3)
        after = self._prefixes()
        self.assertEqual(len(after), 2)
        self.assertEqual(len(after - before), 1, "one worker is new")

    def test_sigterm_stops_all(self) -> None:
        workers = _children(self.parent)
        self.assertEqual(self.server.stop(timeout=20), 0)
        for pid in workers:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still running")

    def test_workers_do_not_outlive_a_killed_supervisor(self) -> None:
        """SIGKILL leaves the supervisor no chance to stop them: the kernel does."""
        workers = _children(self.parent)
        os.kill(self.parent, signal.SIGKILL)
        _wait(lambda: not any(_alive(pid) for pid in workers), timeout=20)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class RebalanceTests(SynchronousTestCase):
    def test_keep_alive_clients_reach_a_restarted_worker(self) -> None:
        """
        Item 11: SO_REUSEPORT spreads connections, not requests: keep-alive
        clients stayed on the survivor of a crash, and the restarted worker
        sat idle.  Connections that end after --keepalive-requests answers
        reconnect, and the kernel spreads them again.
        """
        server = TwistdProcess(["--workers", "2", "--articles", "64", "--keepalive-requests", "20"])
        self.addCleanup(server.cleanup)
        server.start()
        assert server.process is not None
        parent = server.process.pid
        _wait(lambda: server.stdout.count("ready in") >= 2)
        answered: list[tuple[float, str]] = []
        stop = threading.Event()

        def client() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            while not stop.is_set():
                try:
                    connection.request("GET", "/health")
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    connection.close()  # the killed worker's: the next request reconnects
                    continue
                request_id = response.getheader("x-request-id") or ""
                answered.append((time.monotonic(), request_id[4:24]))
                time.sleep(0.01)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(1.0)
            before = {prefix for _, prefix in answered}
            os.kill(_children(parent)[0], signal.SIGKILL)
            _wait(lambda: server.stdout.count("ready in") >= 3, timeout=20)
            ready = time.monotonic()
            time.sleep(4.0)
        finally:
            stop.set()
            for thread in clients:
                thread.join(10)
        since = [prefix for at, prefix in answered if at > ready + 1.0]
        new = [prefix for prefix in since if prefix not in before]
        self.assertEqual(len(before), 2)
        self.assertGreater(len(since), 100)
        self.assertGreater(len(new) / len(since), 0.2, "the restarted worker got no clients")


class StaleRunDirTests(SynchronousTestCase):
    def test_only_a_dead_supervisors_directory_is_stale(self) -> None:
        """
        A directory without its mark may be a supervisor's starting beside us
        (made, not yet marked): it was removed under it.  Now it is stale only
        once older than the grace; a marked one once its supervisor is gone.
        """
        temp = tempfile.mkdtemp(prefix="mockoai-runs-")
        self.addCleanup(shutil.rmtree, temp, True)

        def run_dir(name: str, pid: int | None) -> str:
            path = os.path.join(temp, RUN_DIR_PREFIX + name)
            os.mkdir(path)
            if pid is not None:
                with open(os.path.join(path, "supervisor.pid"), "w") as mark:
                    mark.write(f"{pid} 0\n")
            return path

        child = subprocess.Popen(["true"])
        child.wait()
        starting = run_dir("starting", None)
        alive = run_dir("alive", os.getpid())
        dead = run_dir("dead", child.pid)
        now = time.time()
        self.assertEqual(stale_run_dirs(temp, now), [dead])
        later = now + UNMARKED_GRACE + 1
        self.assertEqual(stale_run_dirs(temp, later), sorted([dead, starting]))
        self.assertNotIn(alive, stale_run_dirs(temp, later))

    def test_killed_supervisor_leaves_logs_and_the_next_start_cleans_up(self) -> None:
        """
        Item 12: after SIGKILL of the supervisor its workers drain and exit,
        but their last lines went to a pipe nobody read and the run directory
        stayed.  They now log to the run directory, and the next supervisor
        relays those lines and removes it.  The kill comes as soon as both
        workers say they are ready, maybe before their reactors run; it was
        flaky while the kernel's word was a SIGTERM, which a worker could
        not tell from its live supervisor's and which ended it unlogged
        before its reactor ran (L{mockoai.ops.workers.die_with_parent}).
        """
        temp = tempfile.mkdtemp(prefix="mockoai-runs-")
        self.addCleanup(shutil.rmtree, temp, True)
        env = {"TMPDIR": temp}
        first = TwistdProcess(["--workers", "2", "--articles", "64"], env=env)
        self.addCleanup(first.cleanup)
        first.start(timeout=60)  # two workers starting on a loaded machine
        assert first.process is not None
        _wait(lambda: first.stdout.count("ready in") >= 2, timeout=30)
        workers = _children(first.process.pid)
        [run_dir] = glob.glob(os.path.join(temp, "mockoai-workers-*"))
        first.process.kill()
        first.process.wait(10)
        _wait(lambda: not any(_alive(pid) for pid in workers), timeout=20)
        self.assertTrue(os.path.isdir(run_dir))
        logs = sorted(glob.glob(os.path.join(run_dir, "worker-*.log")))
        self.assertEqual([os.path.basename(p) for p in logs], ["worker-0.log", "worker-1.log"])
        for path in logs:
            with open(path) as log:
                text = log.read()
            self.assertIn(f"supervisor {first.process.pid} is gone: draining", text)
            self.assertIn("draining 0 in-flight request(s)", text)
            self.assertIn("Server Shut Down.", text)

        second = TwistdProcess(["--workers", "2", "--articles", "64"], env=env)
        self.addCleanup(second.cleanup)
        second.start(timeout=60)
        out = second.wait_for_output(f"removing {run_dir}, left by a supervisor", timeout=20)
        relayed = [line for line in out.splitlines() if "previous worker 1: " in line]
        self.assertTrue(any("draining 0 in-flight request(s)" in line for line in relayed), out)
        self.assertFalse(os.path.exists(run_dir))
        _wait(lambda: second.stdout.count("ready in") >= 2, timeout=30)
        self.assertEqual(second.stop(timeout=30), 0)
        self.assertEqual(glob.glob(os.path.join(temp, "mockoai-workers-*")), [])
