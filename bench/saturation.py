"""
Saturation sweep: what a client sees as load grows past an engine's capacity.

Starts mockoai with ``bench/profiles/saturation.toml`` (one model on a
continuous-batching engine: 16 running sequences, 32 waiting, a 3 s queue
timeout, batch slowdown 0.5 and a 400 tokens/s ceiling) pinned to core 0,
and sweeps closed-loop streaming clients from 1 to 4 x max_running on
core 1.  Each level gets a fresh server and a warm-up that is not measured;
refused clients wait what ``Retry-After`` says (at most ``--backoff-cap``),
as the official SDKs do.  Per level: output tokens/s across all streams,
tokens/s of one stream while it decodes, client-measured TTFT p50/p99
(queueing included), the server's queue time p50/p99 (``/stats``) and the
share of requests refused (429) or timed out in the queue (503).

    python bench/saturation.py                 # about 2 minutes
    python bench/saturation.py --levels 1,16,64 --duration 4

Prints a Markdown table, writes it with every figure to
``bench/results/saturation-<timestamp>.json`` and plots the sweep to
``docs/saturation.png``.  Loopback only; every level is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simbench
from simbench import sse_load

MODEL = "sim-engine"


class Level:
    """What one sweep level measured; only answers read inside the window count."""

    def __init__(self) -> None:
        self.s = sse_load.Stats()
        self.measuring = False
        self.statuses: Counter[int] = Counter()
        self.stream_rates: list[float] = []


async def client(
    conn: sse_load.Conn | None,
    port: int,
    request: bytes,
    level: Level,
    key: bytes,
    delay: float,
    backoff_cap: float,
) -> None:
    """Streaming requests back to back; a refusal waits its Retry-After (capped)."""
    s = level.s
    try:
        await asyncio.sleep(delay)
        while not s.stopping:
            status = 0
            headers: dict[bytes, bytes] = {}
            try:
                if conn is None:
                    conn = await sse_load.Conn.open("127.0.0.1", port)
                    s.reconnects += 1
                timer = conn.arm(60.0)
                t_sent = time.monotonic()
                conn.writer.write(request)
                try:
                    status, headers = await conn.read_head()
                    if status == 200:
                        counter = await sse_load.consume_stream(conn, headers, t_sent, s, key)
                        if level.measuring and counter.content > 1 and counter.last > counter.first:
                            rate = (counter.content - 1) / (counter.last - counter.first)
                            level.stream_rates.append(rate)
                    else:
                        await conn.drain_body(headers)
                finally:
                    timer.cancel()
                if level.measuring:
                    level.statuses[status] += 1
                if headers.get(b"connection", b"").lower() == b"close":
                    conn.close()
                    conn = None
            except (OSError, sse_load.ProtocolError, ValueError) as e:
                s.errors[conn.error_kind(e) if conn else f"io:{type(e).__name__}"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.05)
            if status not in (0, 200):
                try:
                    retry = float(headers.get(b"retry-after", b"1"))
                except ValueError:
                    retry = 1.0
                await asyncio.sleep(min(max(retry, 0.0), backoff_cap))
    finally:
        if conn is not None:
            conn.close()


async def measure(
    port: int,
    pid: int | None,
    concurrency: int,
    max_tokens: int,
    warmup: float,
    duration: float,
    backoff_cap: float,
) -> dict[str, Any]:
    """One level: C{concurrency} clients started over C{warmup}, measured for C{duration}."""
    level = Level()
    s = level.s
    body = sse_load.build_body("chat", MODEL, max_tokens, stream=True)
    request = sse_load.build_request("POST", "127.0.0.1", port, sse_load.PATHS["chat"], body)
    health = sse_load.build_request("GET", "127.0.0.1", port, "/health", None)
    key = sse_load.CONTENT_KEYS["chat"]
    conns = await sse_load.open_all("127.0.0.1", port, concurrency, s, health)
    rng = random.Random(concurrency)
    spread = warmup / 2 if concurrency > 1 else 0.0
    tasks = [
        asyncio.ensure_future(
            client(c, port, request, level, key, rng.uniform(0, spread), backoff_cap)
        )
        for c in conns
        if c is not None
    ]
    await asyncio.sleep(warmup)
    level.measuring = True
    first = (len(s.ttft), s.tokens, s.streams)
    cpu = simbench.CpuWindow(pid)
    t0 = time.monotonic()
    await asyncio.sleep(duration)
    level.measuring = False
    elapsed = time.monotonic() - t0
    used = cpu.stop()
    last = (len(s.ttft), s.tokens, s.streams)
    statuses = dict(level.statuses)
    rates = np.array(level.stream_rates)
    s.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ttft = np.array(s.ttft[first[0] : last[0]]) * 1000.0
    answered = sum(statuses.values())
    refused = sum(n for status, n in statuses.items() if status in (429, 503, 504))

    def pct(values: np.ndarray, p: float) -> float | None:
        return round(float(np.percentile(values, p)), 2) if len(values) else None

    return {
        "concurrency": concurrency,
        "connected": len(tasks),
        "duration_s": round(elapsed, 3),
        "tokens_per_s": round((last[1] - first[1]) / elapsed, 1),
        "streams_completed": last[2] - first[2],
        "stream_tokens_per_s": {"p50": pct(rates, 50), "p10": pct(rates, 10)},
        "ttft_ms": {"p50": pct(ttft, 50), "p99": pct(ttft, 99), "n": len(ttft)},
        "answered": answered,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "refused_pct": round(100.0 * refused / answered, 1) if answered else 0.0,
        "rejected_429": statuses.get(429, 0),
        "timed_out_503": statuses.get(503, 0) + statuses.get(504, 0),
        "errors": dict(s.errors),
        **used,
    }


def table(levels: list[dict[str, Any]]) -> str:
    """The Markdown report."""
    out = [
        "| clients | output tokens/s | per-stream tokens/s (p50) | TTFT p50 / p99 "
        "| queue p50 / p99 (server) | refused: 429 / 503 | refused share | server CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:,.0f}"

    for lv in levels:
        queue = lv["server_stats"].get("queue_ms", {})
        out.append(
            f"| {lv['concurrency']} | {lv['tokens_per_s']:,.0f} "
            f"| {lv['stream_tokens_per_s']['p50'] or 0:.1f} "
            f"| {ms(lv['ttft_ms']['p50'])} / {ms(lv['ttft_ms']['p99'])} ms "
            f"| {ms(queue.get('p50'))} / {ms(queue.get('p99'))} ms "
            f"| {lv['rejected_429']} / {lv['timed_out_503']} "
            f"| {lv['refused_pct']:.1f} % | {lv.get('server_cpu_pct', 0):.0f} % |"
        )
    return "\n".join(out) + "\n"


def plot(path: Path, levels: list[dict[str, Any]], engine: Any) -> None:
    """Throughput, per-stream speed, latency and refusals against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [lv["concurrency"] for lv in levels]

    def series(get: Any) -> list[float]:
        return [float("nan") if get(lv) is None else get(lv) for lv in levels]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    (tput, speed), (lat, refused) = axes
    tput.plot(c, series(lambda lv: lv["tokens_per_s"]), "o-", label="measured")
    if engine.max_tokens_per_s:
        tput.axhline(
            engine.max_tokens_per_s, color="grey", linestyle="--", label="max_tokens_per_s"
        )
    tput.set_ylabel("output tokens/s (all streams)")
    speed.plot(c, series(lambda lv: lv["stream_tokens_per_s"]["p50"]), "o-", color="tab:green")
    speed.set_ylabel("tokens/s of one stream (p50)")
    lat.plot(c, series(lambda lv: lv["ttft_ms"]["p50"]), "o-", label="TTFT p50 (client)")
    lat.plot(c, series(lambda lv: lv["ttft_ms"]["p99"]), "o--", label="TTFT p99 (client)")
    lat.plot(
        c,
        series(lambda lv: lv["server_stats"].get("queue_ms", {}).get("p99")),
        "s:",
        label="queue p99 (server /stats)",
    )
    lat.set_yscale("log")
    lat.set_ylabel("ms")
    for name, color, label in (
        ("refused_pct", "tab:red", "refused, all"),
        ("rejected_429", "tab:orange", "429 (queue full)"),
        ("timed_out_503", "tab:purple", "503 (queue timeout)"),
    ):
        if name == "refused_pct":
            values = series(lambda lv: lv["refused_pct"])
        else:
            values = series(
                lambda lv, name=name: 100.0 * lv[name] / lv["answered"] if lv["answered"] else 0.0
            )
        refused.plot(c, values, "o-", color=color, label=label)
    refused.set_ylabel("% of requests")
    refused.set_ylim(bottom=0)
    for ax in (tput, speed, lat, refused):
        ax.axvline(engine.max_running, color="grey", linewidth=0.8, linestyle=":")
        ax.axvline(
            engine.max_running + engine.max_waiting, color="grey", linewidth=0.8, linestyle="-."
        )
        ax.grid(alpha=0.3)
    for ax in (lat, refused):
        ax.set_xlabel("concurrent closed-loop clients")
    tput.legend(fontsize=8, loc="lower right")
    lat.legend(fontsize=8, loc="upper left")
    refused.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"mockoai engine saturation: max_running {engine.max_running} (dotted), "
        f"+ max_waiting {engine.max_waiting} (dash-dot) (bench/saturation.py)"
    )
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", type=Path, default=simbench.BENCH / "profiles" / "saturation.toml")
    p.add_argument("--levels", help="clients per level (default 1 .. 4 x max_running)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per stream")
    p.add_argument("--backoff-cap", type=float, default=1.0, help="longest Retry-After wait")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    p.add_argument("--png", type=Path, default=simbench.DOCS / "saturation.png")
    p.add_argument("--no-save", action="store_true", help="no JSON, no PNG")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 60):
        p.error("--duration must be in (0, 120] s, --warmup in [0, 60] s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        ["python", "bench/saturation.py", *(sys.argv[1:] if argv is None else argv)]
    )
    settings = simbench.settings(args.profile)
    spec = settings.model(MODEL)
    if spec is None:
        raise SystemExit(f"{args.profile} does not serve {MODEL!r}")
    engine = settings.profile(spec).engine
    if not engine.enabled:
        raise SystemExit(f"{MODEL} has no engine (max_running = 0) in {args.profile}")
    n = engine.max_running
    default = sorted({1, 2, 4, n // 2, 3 * n // 4, n, 3 * n // 2, 2 * n, 3 * n, 4 * n} - {0})
    levels = [int(x) for x in args.levels.split(",")] if args.levels else default
    if not all(1 <= c <= 5000 for c in levels):
        raise SystemExit("--levels must be between 1 and 5000")
    pinning = simbench.pin(args.server_core, args.client_core)
    simbench.prepare(max(levels) + 256)
    tag, started = simbench.stamp()
    workdir = Path(tempfile.mkdtemp(prefix="mockoai-saturation-"))
    results: list[dict[str, Any]] = []
    for level in levels:
        server = simbench.server(args.profile, pinning, workdir)
        try:
            server.start()
            pid = server.proc.pid if server.proc is not None else None
            simbench.log(f"{level} clients: {args.warmup:g} s warm-up, {args.duration:g} s")
            run = measure(
                server.port,
                pid,
                level,
                args.max_tokens,
                args.warmup,
                args.duration,
                args.backoff_cap,
            )
            result = asyncio.run(asyncio.wait_for(run, args.warmup + args.duration + 90.0))
            result["server_stats"] = simbench.stats(server.port, MODEL)
        finally:
            server.stop()
        results.append(result)
        simbench.log(
            f"{level} clients: {result['tokens_per_s']} tokens/s, TTFT p50 "
            f"{result['ttft_ms']['p50']} ms, refused {result['refused_pct']} %"
        )
    report = table(results)
    machine = simbench.run.machine()
    header = (
        f"`{command}` on {machine['cpu'] or 'unknown CPU'} ({machine['nproc']} cores; "
        f"{pinning.note}), {started}"
    )
    print(header + "\n\n" + report, end="", flush=True)
    if not args.no_save:
        payload = simbench.context(command, started, pinning)
        payload |= {
            "profile": str(args.profile),
            "model": MODEL,
            "engine": {
                "max_running": engine.max_running,
                "max_waiting": engine.max_waiting,
                "queue_timeout_s": engine.queue_timeout,
                "batch_slowdown": engine.batch_slowdown,
                "max_tokens_per_s": engine.max_tokens_per_s,
            },
            "levels": results,
            "markdown": header + "\n\n" + report,
        }
        path = simbench.save("saturation", tag, payload)
        plot(args.png, results, engine)
        simbench.log(f"wrote {path} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
