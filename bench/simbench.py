"""
What ``accuracy.py`` and ``saturation.py`` share: a mockoai server started
from a profile and pinned to one core, the driver pinned to the other, the
configured latency distributions read through ``mockoai.ops.config`` (the same
file the server reads), ``GET /stats``, and where results go.

The HTTP/SSE client itself is ``sse_load.py``'s (``Conn``, ``SseCounter``,
``open_all``...); the server plumbing is ``run.py``'s (``Server``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import run  # noqa: E402  (a sibling script, not a package)
import sse_load  # noqa: E402

from mockoai.ops.config import Settings, load_settings  # noqa: E402

__all__ = ["CpuWindow", "Pinning", "pin", "prepare", "run", "server", "settings", "sse_load"]

RESULTS = BENCH / "results"
DOCS = REPO / "docs"
log = run.log


@dataclass
class Pinning:
    """taskset prefix for the server, and a note saying what was done."""

    server: list[str]
    note: str


def pin(server_core: int = 0, client_core: int = 1) -> Pinning:
    """Pin the driver (the load client) to C{client_core}; the server goes on C{server_core}."""
    cores = os.cpu_count() or 1
    if shutil.which("taskset") is None:
        return Pinning([], "taskset not found: nothing pinned")
    if cores < 2:
        return Pinning([], "one core: server and client share it")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {client_core})
    return Pinning(
        ["taskset", "-c", str(server_core)],
        f"server on core {server_core}, client on core {client_core}",
    )


def prepare(fds: int) -> None:
    """Raise the fd limit for C{fds} sockets; make SIGTERM run the finally blocks."""
    got = sse_load.raise_nofile(fds)
    if got < fds:
        log(f"warning: RLIMIT_NOFILE is {got}, below {fds}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def settings(profile: Path) -> Settings:
    """The profile as the server will read it (no environment, no command line)."""
    return load_settings({"config": str(profile)}, {})


def server(
    profile: Path, pinning: Pinning, workdir: Path, args: tuple[str, ...] = ()
) -> run.Server:
    """A mockoai server on a free loopback port, serving C{profile}; not started yet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return run.Server(
        "mockoai",
        run.DEFAULT_COMMANDS["mockoai"],
        sys.executable,
        ["--config", str(profile), *args],
        pinning.server,
        env,
        workdir,
    )


def stats(port: int, model: str) -> dict[str, Any]:
    """The server's own ``/stats`` for C{model} (empty if it has none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return {}
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    models: dict[str, dict[str, Any]] = json.loads(body).get("models", {})
    return models.get(model, {})


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        nl = body.index(b"\r\n", pos)
        size = int(body[pos:nl].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[nl + 2 : nl + 2 + size])
        pos = nl + 4 + size


def schedstat(pid: int | str = "self") -> tuple[int, int]:
    """
    Nanoseconds a process's main thread has run on a CPU, and has waited
    runnable for one (``/proc/PID/schedstat``): the second is time lost to
    other processes on a shared machine.  (0, 0) where unavailable.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            ran, waited, _ = f.read().split()
        return int(ran), int(waited)
    except (OSError, ValueError):
        return 0, 0


class CpuWindow:
    """CPU use and run-queue wait of the client and the server over a window, in %."""

    def __init__(self, server_pid: int | None) -> None:
        self.pids: dict[str, int | str] = {"client": "self"}
        if server_pid is not None:
            self.pids["server"] = server_pid
        self.t0 = time.monotonic()
        self.start = {name: schedstat(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.t0, 1e-9) * 1e9
        out = {}
        for name, pid in self.pids.items():
            ran, waited = schedstat(pid)
            ran0, waited0 = self.start[name]
            out[f"{name}_cpu_pct"] = round(100.0 * (ran - ran0) / wall, 1)
            out[f"{name}_runqueue_wait_pct"] = round(100.0 * (waited - waited0) / wall, 1)
        return out


def stamp() -> tuple[str, str]:
    """A UTC timestamp for file names, and the ISO date-time for reports."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ"), now.isoformat(timespec="seconds")


def save(name: str, tag: str, payload: dict[str, Any]) -> Path:
    """Write C{payload} to ``bench/results/<name>-<tag>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{tag}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def context(command: str, started: str, pinning: Pinning) -> dict[str, Any]:
    """What every result file records about the run."""
    return {
        "command": command,
        "started": started,
        "machine": run.machine(),
        "loadavg_at_start": os.getloadavg(),
        "git": run.git_head(),
        "pinning": pinning.note,
    }
