"""
``--workers 2`` after a worker crash: how long until the restarted worker
carries its share of keep-alive load again.

SO_REUSEPORT spreads new connections over the workers, not requests: when a
worker is killed its clients reconnect to the survivor, and with keep-alive
they stay there after the supervisor has restarted it.  ``--keepalive-requests
N`` closes every connection after N answers (``Connection: close`` on the
last), so the clients reconnect and the kernel spreads them again.

For each configuration (by default ``--keepalive-requests 0``, the old
behaviour, and the default 1000), this starts ``twistd -n mockoai --workers
2`` on a loopback port, runs ``wrk -t1 -c64`` on ``GET /health`` (as the
issue did), SIGKILLs one worker after ``--kill-at`` seconds, and samples
each worker's CPU time every 0.25 s.  It reports, from the kill, when the
supervisor restarted the worker (a new process), when the new worker was
ready (its ``ready in`` log line: it built its corpus), when it first served
(10% of the workers' CPU over a second, counted from ready: its start-up
burns CPU too) and when load was balanced again (the new worker at 40% or
more of it over a second: back to full capacity), with wrk's request rate
and errors.  Loopback only; every run is bounded.

    python bench/rebalance.py [--duration 30] [--kill-at 5] [--endpoint health|chat]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
PATHS = {"health": "/health", "chat": "/v1/chat/completions"}
TICK = 0.25
SERVING, BALANCED = 0.10, 0.40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def ready(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/health"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
        return bool(r.status == 200)
    return False


def run(extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    argv = [*TWISTD, "-n", "--pidfile=", "mockoai", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    argv += ["--workers", "2", "--articles", "256", "--tokens-mean", "32", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile(prefix="mockoai-rebalance-", suffix=".log")  # noqa: SIM115
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    wrk_proc = None
    try:
        deadline = time.monotonic() + 60
        while not (len(children(server.pid)) == 2 and ready(port)):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        time.sleep(2)  # both workers listening
        url = f"http://127.0.0.1:{port}{PATHS[args.endpoint]}"
        wrk_argv = ["wrk", "-t1", "-c64", f"-d{args.duration:g}s", "--timeout", "5s"]
        if args.endpoint == "chat":
            wrk_argv += ["-s", str(REPO / "bench" / "wrk" / "chat.lua")]
        wrk_proc = subprocess.Popen([*wrk_argv, url], stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        last: dict[int, int] = {}
        samples: list[tuple[float, dict[int, int]]] = []  # (t, pid -> ticks in the tick)
        victim = None
        killed_at = 0.0
        restarted_at = ready_at = None
        while wrk_proc.poll() is None and time.monotonic() - started < args.duration + 10:
            time.sleep(TICK)
            now = time.monotonic() - started
            if victim is None and now >= args.kill_at:
                victim = children(server.pid)[0]
                os.kill(victim, signal.SIGKILL)
                killed_at = now
            current = {}
            for pid in children(server.pid):
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    current[pid] = ticks - last.get(pid, ticks)
                    last[pid] = ticks
            samples.append((now, current))
            if (
                victim is not None
                and restarted_at is None
                and any(pid not in _first_pids(samples) for pid in current)
            ):
                restarted_at = now
            if restarted_at is not None and ready_at is None and _readies(log.name) >= 3:
                ready_at = now
        out = wrk_proc.communicate(timeout=30)[0]
    finally:
        if wrk_proc is not None and wrk_proc.poll() is None:
            wrk_proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    return report(samples, killed_at, restarted_at, ready_at, out)


def _readies(path: str) -> int:
    """``ready in`` lines in the supervisor's log (one per worker start)."""
    with open(path, "rb") as f:
        return f.read().count(b"] ready in ")


def _first_pids(samples: list[tuple[float, dict[int, int]]]) -> set[int]:
    return set(samples[0][1]) if samples else set()


def report(
    samples: list[tuple[float, dict[int, int]]],
    killed_at: float,
    restarted_at: float | None,
    ready_at: float | None,
    wrk_out: str,
) -> dict[str, Any]:
    """When the new worker first served and was balanced again, from the CPU samples."""
    original = _first_pids(samples)
    window = max(1, round(1.0 / TICK))
    serving = balanced = None
    shares = []
    for i in range(len(samples)):
        chunk = samples[max(0, i - window + 1) : i + 1]
        t = samples[i][0]
        if t < killed_at:
            continue
        new = sum(n for _, c in chunk for pid, n in c.items() if pid not in original)
        total = sum(n for _, c in chunk for n in c.values())
        share = new / total if total else 0.0
        shares.append((round(t - killed_at, 2), round(share, 2)))
        if ready_at is None or t - TICK * window < ready_at:
            continue  # start-up CPU is not serving
        if serving is None and share >= SERVING:
            serving = t - killed_at
        if balanced is None and share >= BALANCED:
            balanced = t - killed_at
    requests = re.search(r"(\d+) requests in", wrk_out)
    errors = re.search(r"Socket errors: (.*)", wrk_out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
    return {
        "restarted_s": None if restarted_at is None else round(restarted_at - killed_at, 2),
        "ready_s": None if ready_at is None else round(ready_at - killed_at, 2),
        "serving_s": None if serving is None else round(serving, 2),
        "balanced_s": None if balanced is None else round(balanced, 2),
        "requests": int(requests.group(1)) if requests else None,
        "req_per_s": float(rate.group(1)) if rate else None,
        "socket_errors": errors.group(1).strip() if errors else "none",
        "new_worker_share": shares,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--duration", type=float, default=30.0, help="seconds of wrk load")
    p.add_argument("--kill-at", type=float, default=5.0, help="seconds into the load")
    p.add_argument("--endpoint", choices=sorted(PATHS), default="health")
    p.add_argument(
        "--configs",
        default="--keepalive-requests 0;--keepalive-requests 1000",
        help="server options per configuration, ';'-separated",
    )
    p.add_argument("--shares", action="store_true", help="print the new worker's share per tick")
    args = p.parse_args(argv)
    print("| configuration | restarted | ready | first served | balanced (full capacity) |", end="")
    print(" req/s | wrk errors |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs.split(";"):
        result = run(config.split(), args)

        def seconds(value: float | None) -> str:
            return f"{value:.1f} s" if value is not None else f"not within {args.duration:g} s"

        print(
            f"| `{config}` | {seconds(result['restarted_s'])} | {seconds(result['ready_s'])} "
            f"| {seconds(result['serving_s'])} "
            f"| {seconds(result['balanced_s'])} | {result['req_per_s']} "
            f"| {result['socket_errors']} |",
            flush=True,
        )
        if args.shares:
            print(result["new_worker_share"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
