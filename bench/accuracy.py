"""
Pacing accuracy: do clients see the latency distributions a profile configures?

Starts mockoai with ``bench/profiles/accuracy.toml`` (time to first token
Normal(200, 20) ms, inter-token latency Normal(20, 2) ms per token, one token
per event, no engine) pinned to core 0, drives 1, 100 and 1,000 concurrent
closed-loop streams from core 1 with ``paced_gaps.py``'s epoll client, and compares
the client-measured TTFT and per-token ITL with the configured
distribution's own quantiles (``Distribution.percentile``): p50 within
+-5 %, p99 within +-10 %.  Each level gets a fresh server; the streams start
staggered over one stream's length (a closed loop started all at once stays
in lock-step for many rounds) and a warm-up is not measured.

    python bench/accuracy.py                   # about 2 minutes
    python bench/accuracy.py --levels 1,100 --duration 5

Prints a Markdown table with PASS/FAIL per row, writes every figure (and
the server's own ``/stats`` for comparison) to
``bench/results/accuracy-<timestamp>.json`` and the CDFs of measured and
configured TTFT and ITL to ``docs/accuracy.png``.  Loopback only; every
level is bounded by its duration plus a hard timeout.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paced_gaps
import simbench
from simbench import sse_load

TOLERANCE = {50: 0.05, 99: 0.10}
MODEL = "gpt-4o"


def measure(
    port: int, pid: int | None, concurrency: int, max_tokens: int, warmup: float, duration: float
) -> dict[str, Any]:
    """
    C{concurrency} keep-alive connections running streams back to back,
    started at random instants over C{warmup}; TTFT and gaps (seconds) read
    in the C{duration} after it, with both processes' CPU use.  The client
    is L{paced_gaps}' epoll loop: asyncio's ~20 us per event would make a
    thousand streams measure the client's own lag.
    """
    body = sse_load.build_body("chat", MODEL, max_tokens, stream=True)
    request = sse_load.build_request("POST", "127.0.0.1", port, sse_load.PATHS["chat"], body)
    stream_s = 0.2 + 0.02 * max_tokens  # one stream, as configured on average
    spread = min(warmup, stream_s) if concurrency > 1 else 0.0
    cpu = simbench.CpuWindow(pid)
    raw = paced_gaps.collect(
        "127.0.0.1",
        port,
        concurrency,
        request,
        sse_load.CONTENT_KEYS["chat"],
        warmup,
        duration,
        stagger=spread,
        seed=concurrency,
    )
    used = cpu.stop()
    return {
        "connected": concurrency,
        "ttft": np.array(raw["ttft"]),
        "gaps": np.array(raw["gaps"]),
        "streams": raw["streams_completed"],
        "events_per_s": raw["events_per_s"],
        "errors": raw["errors"],
        **used,
    }


def compare(
    level: int, metric: str, measured: np.ndarray, dist: Any, server: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per percentile: configured vs measured (ms), the error, PASS/FAIL."""
    rows = []
    for p, tolerance in TOLERANCE.items():
        want = dist.percentile(p) * 1000.0
        got = float(np.percentile(measured, p)) * 1000.0 if len(measured) else float("nan")
        error = got / want - 1.0
        rows.append(
            {
                "concurrency": level,
                "metric": metric,
                "percentile": p,
                "configured_ms": round(want, 2),
                "measured_ms": round(got, 2),
                "error_pct": round(100.0 * error, 2),
                "tolerance_pct": round(100.0 * tolerance, 1),
                "pass": bool(abs(error) <= tolerance),
                "samples": len(measured),
                "server_ms": server.get(f"{metric.lower()}_ms", {}).get(f"p{p}"),
            }
        )
    return rows


def table(rows: list[dict[str, Any]], levels: list[dict[str, Any]]) -> str:
    """The Markdown report."""
    out = [
        "| streams | metric | configured | client-measured | error | target | result "
        "| server /stats |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['concurrency']:,} | {r['metric']} p{r['percentile']} "
            f"| {r['configured_ms']:.1f} ms | {r['measured_ms']:.1f} ms "
            f"| {r['error_pct']:+.1f} % | +-{r['tolerance_pct']:g} % "
            f"| {'PASS' if r['pass'] else 'FAIL'} "
            f"| {r['server_ms'] if r['server_ms'] is not None else '-'} ms |"
        )
    out += [
        "",
        "| streams | samples TTFT / ITL | gaps of 0 (events read together) | events/s "
        "| server CPU / run-queue wait | client CPU / run-queue wait | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        out.append(
            f"| {lv['concurrency']:,} | {lv['ttft_samples']:,} / {lv['itl_samples']:,} "
            f"| {lv['zero_gaps_pct']:.2f} % | {lv['events_per_s']:,.0f} "
            f"| {lv.get('server_cpu_pct', 0):.0f} % "
            f"/ {lv.get('server_runqueue_wait_pct', 0):.0f} % "
            f"| {lv['client_cpu_pct']:.0f} % / {lv['client_runqueue_wait_pct']:.0f} % "
            f"| {lv['errors']} |"
        )
    return "\n".join(out) + "\n"


def plot(path: Path, curves: dict[int, dict[str, np.ndarray]], ttft: Any, itl: Any) -> None:
    """CDFs of measured TTFT and ITL per concurrency over the configured ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    q = np.linspace(0.0005, 0.9995, 400)

    def upper(name: str, floor: float, cap: float) -> float:
        """Wide enough for the worst p99 measured, within reason."""
        p99s = [float(np.percentile(d[name], 99)) * 1000.0 for d in curves.values() if len(d[name])]
        return max(floor, min(cap, max(p99s, default=floor) * 1.05))

    for ax, name, dist, lo, hi in (
        (axes[0], "ttft", ttft, 100, upper("ttft", 300, 600)),
        (axes[1], "gaps", itl, 0, upper("gaps", 32, 60)),
    ):
        want = np.array([dist.percentile(100 * x) for x in q]) * 1000.0
        ax.plot(want, q, color="black", linewidth=2.5, label=f"configured {dist.describe()} ms")
        for level, data in curves.items():
            values = np.sort(data[name]) * 1000.0
            if not len(values):
                continue
            step = max(1, len(values) // 4000)
            ys = (np.arange(len(values)) + 1) / len(values)
            ax.plot(values[::step], ys[::step], linewidth=1.2, label=f"{level:,} streams")
        for p in (0.5, 0.99):
            ax.axhline(p, color="grey", linewidth=0.5, linestyle=":")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("ms")
        ax.set_ylabel("CDF")
        ax.set_title("time to first token" if name == "ttft" else "inter-token latency (per token)")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("mockoai pacing: client-measured vs configured (bench/accuracy.py)")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", type=Path, default=simbench.BENCH / "profiles" / "accuracy.toml")
    p.add_argument("--levels", default="1,100,1000", help="concurrent streams, comma-separated")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    p.add_argument("--c1-duration", type=float, default=40.0, help="seconds measured at c=1")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per stream")
    p.add_argument("--c1-max-tokens", type=int, default=8, help="tokens per stream at c=1")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    p.add_argument("--png", type=Path, default=simbench.DOCS / "accuracy.png")
    p.add_argument("--no-save", action="store_true", help="no JSON, no PNG")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not all(1 <= c <= 20000 for c in args.levels):
        p.error("--levels must be between 1 and 20000")
    if not (0 < args.duration <= 600 and 0 < args.c1_duration <= 600 and 0 <= args.warmup <= 60):
        p.error("durations must be in (0, 600] s, --warmup in [0, 60] s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "bench/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    pinning = simbench.pin(args.server_core, args.client_core)
    simbench.prepare(max(args.levels) + 256)
    settings = simbench.settings(args.profile)
    latency = settings.profile(settings.model(MODEL)).latency
    if latency.prefill_per_token:
        raise SystemExit("the profile must have prefill_per_token = 0: TTFT is response_delay")
    tag, started = simbench.stamp()
    workdir = Path(tempfile.mkdtemp(prefix="mockoai-accuracy-"))
    rows: list[dict[str, Any]] = []
    levels: list[dict[str, Any]] = []
    curves: dict[int, dict[str, np.ndarray]] = {}
    for level in args.levels:
        one = level == 1
        duration = args.c1_duration if one else args.duration
        tokens = args.c1_max_tokens if one else args.max_tokens
        warmup = min(args.warmup, 1.0) if one else args.warmup
        server = simbench.server(args.profile, pinning, workdir)
        try:
            server.start()
            pid = server.proc.pid if server.proc is not None else None
            simbench.log(f"c={level}: {warmup:g} s warm-up, {duration:g} s measured")
            result = measure(server.port, pid, level, tokens, warmup, duration)
            own = simbench.stats(server.port, MODEL)
        finally:
            server.stop()
        ttft, gaps = result.pop("ttft"), result.pop("gaps")
        curves[level] = {"ttft": ttft, "gaps": gaps}
        rows += compare(level, "TTFT", ttft, latency.ttft, own)
        rows += compare(level, "ITL", gaps, latency.itl, own)
        levels.append(
            {
                "concurrency": level,
                "max_tokens": tokens,
                "warmup_s": warmup,
                "duration_s": duration,
                "ttft_samples": len(ttft),
                "itl_samples": len(gaps),
                "zero_gaps_pct": round(100.0 * float(np.mean(gaps == 0.0)), 3) if len(gaps) else 0,
                "client_ms": {
                    name: {
                        f"p{p}": round(float(np.percentile(v, p)) * 1000.0, 3)
                        for p in (1, 10, 50, 90, 99, 99.9)
                    }
                    | {"mean": round(float(v.mean()) * 1000.0, 3)}
                    for name, v in (("ttft", ttft), ("itl", gaps))
                    if len(v)
                },
                "server_stats": own,
                **result,
            }
        )
        simbench.log(
            f"c={level}: TTFT p50/p99 {np.percentile(ttft, 50) * 1e3:.1f}/"
            f"{np.percentile(ttft, 99) * 1e3:.1f} ms, ITL p50/p99 "
            f"{np.percentile(gaps, 50) * 1e3:.2f}/{np.percentile(gaps, 99) * 1e3:.2f} ms, "
            f"CPU server {result.get('server_cpu_pct')} % client {result['client_cpu_pct']} %"
        )
    report = table(rows, levels)
    header = (
        f"`{command}` on {simbench.run.machine()['cpu'] or 'unknown CPU'} "
        f"({simbench.run.machine()['nproc']} cores; {pinning.note}), {started}"
    )
    print(header + "\n\n" + report, end="", flush=True)
    if not args.no_save:
        payload = simbench.context(command, started, pinning)
        payload |= {
            "profile": str(args.profile),
            "configured": {"ttft": latency.ttft.describe(), "itl": latency.itl.describe()},
            "rows": rows,
            "levels": levels,
            "markdown": header + "\n\n" + report,
        }
        path = simbench.save("accuracy", tag, payload)
        plot(args.png, curves, latency.ttft, latency.itl)
        simbench.log(f"wrote {path} and {args.png}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
