"""
``--workers`` scaling: non-streaming chat throughput with 1, 2, ... N workers,
what each added worker brings, and the server CPU each request costs.

Each worker count is measured with wrk (1 thread, c connections, the median
of --repeat runs).  While the machine has a core left over, the workers get
cores of their own (``taskset``: workers on the first N cores of this
process's affinity mask, wrk on the rest); from there on, workers and wrk
share every core, and "1 worker, shared" is measured too, so the shared rows
compare with a shared baseline.  On a 2-core machine that is:

- ``1 worker``: server on core 0, wrk on core 1 (the run.py setup);
- ``1 worker, shared`` and ``2 workers, shared``: server and wrk on cores 0-1.

Where wrk shares the cores, req/s understates what the workers could do;
server CPU time per request (utime + stime of the whole process group,
supervisor included, over the requests wrk counted) does not depend on it.
So the report gives, per worker count, that CPU in microseconds and the
ceiling it implies on cores of their own (N x 10^6 / CPU us); a CPU per
request that stays flat as workers are added means they scale linearly
with the cores they get.  Loopback only; every run is bounded.

    python bench/workers.py [--workers auto|1,2,4] [--duration 10] [--repeat 3] [-c 128]
                            [--python .venv-pypy/bin/python] [--mockoai-args "--http lean"]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    DEFAULT_COMMANDS,
    READY_TIMEOUT,
    REPO,
    RESULTS,
    Ctx,
    Server,
    machine,
    wrk,
)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in a process group (the supervisor and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the ")"
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def cpus() -> list[int]:
    """The CPUs this process may run on, in order (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan(counts: list[int], available: list[int]) -> list[tuple[str, int, str, str]]:
    """
    (name, workers, server CPUs, wrk CPUs) for each count: cores of their
    own while one is left for wrk, else every core shared (and one worker
    shared as well, to compare with).
    """
    rows: list[tuple[str, int, str, str]] = []
    every = ",".join(map(str, available))
    shared = False
    for n in counts:
        if n < len(available):
            server = ",".join(map(str, available[:n]))
            client = ",".join(map(str, available[n:]))
            rows.append((f"{n} worker{'s' if n > 1 else ''}", n, server, client))
        else:
            if not shared:
                rows.append(("1 worker, shared", 1, every, every))
                shared = True
            rows.append((f"{n} workers, shared", n, every, every))
    return rows


def ready_workers(server: Server, workers: int) -> None:
    """Wait until every worker has logged that it serves, not just the first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert server.log_path is not None
        if server.log_path.read_text(errors="replace").count("ready in ") >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name}: not every worker ready\n{server.tail()}")


def measure(
    name: str, workers: int, server_cores: str, client_cores: str, args: argparse.Namespace
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Not mockoai-workers-*: a supervisor removes those as its predecessors' run directories.
    workdir = Path(tempfile.mkdtemp(prefix="mockoai-bench-workers-"))
    server = Server(
        name,
        DEFAULT_COMMANDS["mockoai"],
        args.python,
        ["--workers", str(workers), *args.mockoai_args.split()],
        ["taskset", "-c", server_cores],
        env,
        workdir,
    )
    ctx = Ctx(args.duration, args.repeat, ["taskset", "-c", client_cores], args.python, 32, 64, {})
    runs: list[dict[str, Any]] = []
    try:
        server.start()
        ready_workers(server, workers)
        for _ in range(args.warmup):
            wrk(ctx, server, "chat", args.connections)  # warm-up (PyPy's JIT), not counted
        assert server.proc is not None
        for _ in range(args.repeat):
            cpu0 = group_cpu_seconds(server.proc.pid)
            r = wrk(ctx, server, "chat", args.connections)
            cpu = group_cpu_seconds(server.proc.pid) - cpu0
            if "rps" in r:
                r["server_cpu_us_per_request"] = round(cpu / max(1, r["raw"]["requests"]) * 1e6, 1)
            runs.append(r)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    good = [r for r in runs if "rps" in r]
    return {
        "name": name,
        "workers": workers,
        "server_cores": server_cores,
        "client_cores": client_cores,
        "shared": server_cores == client_cores,
        "rps": statistics.median(r["rps"] for r in good) if good else None,
        "p99_ms": statistics.median(r["p99_ms"] for r in good) if good else None,
        "cpu_us": statistics.median(r["server_cpu_us_per_request"] for r in good) if good else None,
        "errors": [r.get("error") for r in runs if "error" in r],
    }


def counts(value: str, available: int) -> list[int]:
    if value == "auto":
        return list(range(1, available + 1))
    return sorted({int(n) for n in value.split(",")})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--workers", default="auto", help="worker counts: 1,2,4 or auto (1 to cores)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per figure (median)")
    p.add_argument("--warmup", type=int, default=1, help="wrk runs before those (not counted)")
    p.add_argument("-c", "--connections", type=int, default=128, help="wrk connections")
    p.add_argument("--python", default=sys.executable, help="the servers' interpreter")
    p.add_argument("--mockoai-args", default="", help="extra arguments for mockoai")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset: apt-get install -y wrk util-linux", file=sys.stderr)
        return 2
    available = cpus()
    if len(available) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    load_before = load()
    results = [
        measure(name, n, server, client, args)
        for name, n, server, client in plan(counts(args.workers, len(available)), available)
    ]
    print(f"## --workers scaling, {machine()['cpu']}, wrk -t1 -c{args.connections}")
    print(
        f"Server: `{args.python}` {args.mockoai_args}; 1-minute load average "
        f"{load_before} before, {load()} after (other work on the machine skews every figure).\n"
    )
    print(
        "| configuration | server / wrk CPUs | req/s | vs 1 worker | added by the last worker "
        "| p99 ms | server CPU µs/request | ceiling on cores of their own, req/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    previous: dict[bool, dict[str, Any]] = {}
    for r in results:
        one = next(
            (x for x in results if x["workers"] == 1 and x["shared"] == r["shared"]), results[0]
        )
        before = previous.get(r["shared"])
        times = f"{r['rps'] / one['rps']:.2f}" if r["rps"] and one["rps"] else "—"
        added = (
            f"{r['rps'] - before['rps']:+,.0f}"
            if before is not None and r["rps"] and before["rps"]
            else "—"
        )
        ceiling = f"{r['workers'] * 1e6 / r['cpu_us']:,.0f}" if r["cpu_us"] else "—"
        rps = f"{r['rps']:,.0f}" if r["rps"] else "—"
        print(
            f"| {r['name']} | {r['server_cores']} / {r['client_cores']} | {rps} | {times} "
            f"| {added} | {r['p99_ms']} | {r['cpu_us']} | {ceiling} |"
        )
        previous[r["shared"]] = r
    measured = [r for r in results if r["cpu_us"]]
    if len(measured) > 1:
        low, high = min(r["cpu_us"] for r in measured), max(r["cpu_us"] for r in measured)
        print(
            f"\nServer CPU per request: {low}-{high} µs from 1 to {measured[-1]['workers']} "
            f"workers; N workers on N cores of their own serve about N x 10^6 / that."
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"workers-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


def load() -> str:
    """The 1-minute load average."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"


if __name__ == "__main__":
    sys.exit(main())
