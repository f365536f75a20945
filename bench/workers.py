"""
``--workers`` scaling: non-streaming chat throughput of one worker against two.

Three configurations, each measured with wrk (1 thread, c connections, the
median of --repeat runs), on a 2-core machine:

- ``1 worker, pinned``: server on core 0, wrk on core 1 (the run.py setup);
- ``1 worker, shared``: server and wrk both free to use cores 0-1;
- ``2 workers, shared``: two SO_REUSEPORT workers and wrk on cores 0-1.

The issue's target compares two workers with one.  On two cores wrk itself
needs a share of them, so the report also gives server CPU time per request
(summed over the process group), which shows whether a worker loses
efficiency when there are two, whatever wrk takes.  Loopback only; every
run is bounded.

    python bench/workers.py [--duration 10] [--repeat 3] [-c 128]
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


def measure(
    name: str, workers: int, server_cores: str, client_cores: str, args: argparse.Namespace
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    workdir = Path(tempfile.mkdtemp(prefix="mockoai-workers-bench-"))
    server = Server(
        name,
        DEFAULT_COMMANDS["mockoai"],
        sys.executable,
        ["--workers", str(workers)],
        ["taskset", "-c", server_cores],
        env,
        workdir,
    )
    ctx = Ctx(
        args.duration, args.repeat, ["taskset", "-c", client_cores], sys.executable, 32, 64, {}
    )
    runs: list[dict[str, Any]] = []
    try:
        server.start()
        time.sleep(2.0 if workers > 1 else 0.5)  # every worker up, not just the first
        wrk(ctx, server, "chat", args.connections)  # warm-up, not counted
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
        "rps": statistics.median(r["rps"] for r in good) if good else None,
        "p99_ms": statistics.median(r["p99_ms"] for r in good) if good else None,
        "cpu_us": statistics.median(r["server_cpu_us_per_request"] for r in good) if good else None,
        "errors": [r.get("error") for r in runs if "error" in r],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per figure (median)")
    p.add_argument("-c", "--connections", type=int, default=128, help="wrk connections")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset: apt-get install -y wrk util-linux", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores", file=sys.stderr)
        return 2
    results = [
        measure("1 worker, pinned (wrk on the other core)", 1, "0", "1", args),
        measure("1 worker, shared cores", 1, "0,1", "0,1", args),
        measure("2 workers, shared cores", 2, "0,1", "0,1", args),
    ]
    one, shared, two = (r["rps"] or 0.0 for r in results)
    print(f"## --workers scaling, {machine()['cpu']}, wrk -t1 -c{args.connections}")
    print("| configuration | req/s | p99 ms | server CPU us/request |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['rps']} | {r['p99_ms']} | {r['cpu_us']} |")
    if one and shared:
        print(
            f"\n2 workers / 1 worker pinned: {two / one:.2f}x; "
            f"/ 1 worker shared: {two / shared:.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"workers-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
