# -*- test-case-name: tests.test_latency -*-
"""
Latency distributions and the per-model latency model.

Time to first token is ``ttft`` (a distribution: base plus jitter) plus
``prefill_per_token`` for every prompt token; every later token takes one
inter-token latency drawn from ``itl``.  Distributions are written in
milliseconds, the way people quote latencies, in one of these forms
(command line, environment and profiles alike)::

    20                      constant 20 ms
    normal:20:3             normal, mean 20 ms, stddev 3 ms (clamped at 0)
    lognormal:20:8          log-normal with mean 20 ms and stddev 8 ms
    uniform:10:30           uniform between 10 and 30 ms
    p50=20,p90=28,p99=45    empirical: linear between the given percentiles,
                            flat beyond the first and last one

Profiles may also use tables: ``itl = {dist = "normal", mean = 20, stddev = 3}``.
All sampling goes through a numpy Generator, so seeded runs repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@attrs.frozen
class Distribution:
    """
    A latency distribution, in seconds.  ``kind`` is one of constant,
    normal, lognormal, uniform, empirical; ``a`` and ``b`` its parameters;
    ``points`` the (percentile, value) pairs of an empirical one.
    """

    kind: str = "constant"
    a: float = 0.0
    b: float = 0.0
    points: tuple[tuple[float, float], ...] = ()

    @property
    def constant(self) -> bool:
        return self.kind == "constant"

    @property
    def mean(self) -> float:
        if self.kind in ("constant", "normal", "lognormal"):
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        grid = np.linspace(0.0, 1.0, 10001)
        return float(self._inverse(grid).mean())

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        """``size`` independent draws, never negative."""
        kind = self.kind
        if kind == "constant":
            return np.full(size, self.a)
        if kind == "normal":
            return np.maximum(rng.normal(self.a, self.b, size), 0.0)
        if kind == "lognormal":
            mean, stddev = self.a, self.b
            if mean <= 1e-9:  # below a nanosecond: nothing to jitter
                return np.full(size, max(mean, 0.0))
            sigma2 = math.log1p((stddev / mean) ** 2)
            mu = math.log(mean) - sigma2 / 2
            return rng.lognormal(mu, math.sqrt(sigma2), size)
        if kind == "uniform":
            return rng.uniform(self.a, self.b, size)
        return self._inverse(rng.random(size))

    def _inverse(self, quantiles: FloatArray) -> FloatArray:
        ps = np.array([p / 100.0 for p, _ in self.points])
        values: FloatArray = np.array([v for _, v in self.points])
        return np.interp(quantiles, ps, values)

    def percentile(self, p: float) -> float:
        """The configured distribution's own p-th percentile (for checks and plots)."""
        from statistics import NormalDist

        q = p / 100.0
        if self.kind == "constant":
            return self.a
        if self.kind == "normal":
            return max(0.0, NormalDist(self.a, self.b or 1e-12).inv_cdf(q)) if self.b else self.a
        if self.kind == "lognormal":
            if self.a <= 1e-9:
                return max(self.a, 0.0)
            sigma2 = math.log1p((self.b / self.a) ** 2)
            mu = math.log(self.a) - sigma2 / 2
            return math.exp(mu + math.sqrt(sigma2) * NormalDist().inv_cdf(q))
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * q
        return float(self._inverse(np.array([q]))[0])

    def describe(self) -> str:
        ms = 1000.0
        if self.kind == "constant":
            return f"{self.a * ms:g}"
        if self.kind == "empirical":
            return ",".join(f"p{p:g}={v * ms:g}" for p, v in self.points)
        return f"{self.kind}:{self.a * ms:g}:{self.b * ms:g}"


def constant(seconds: float) -> Distribution:
    return Distribution("constant", seconds)


_ZERO = Distribution()
_KINDS = {"normal": 2, "lognormal": 2, "uniform": 2, "constant": 1}


def parse(value: object) -> Distribution:
    """A distribution from its written form (milliseconds); ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(f"expected a latency in ms or a distribution, got {value!r}")
    if isinstance(value, (int, float)):
        return _checked("constant", [float(value)])
    if isinstance(value, dict):
        return _from_table(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a latency in ms or a distribution, got {value!r}")
    text = value.strip()
    if "=" in text:
        return _empirical(text)
    kind, _, rest = text.partition(":")
    if not rest:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number of ms or a distribution, got {value!r}") from None
        return _checked("constant", [number])
    try:
        params = [float(p) for p in rest.split(":")]
    except ValueError:
        raise ValueError(f"distribution parameters must be numbers, got {value!r}") from None
    return _checked(kind.lower(), params)


def _checked(kind: str, params: Sequence[float]) -> Distribution:
    if kind not in _KINDS:
        raise ValueError(
            f"unknown distribution {kind!r} (constant, normal, lognormal, uniform, or p50=...)"
        )
    if len(params) != _KINDS[kind]:
        raise ValueError(f"{kind} takes {_KINDS[kind]} parameter(s), got {len(params)}")
    if any(not math.isfinite(p) or p < 0 for p in params):
        raise ValueError("latencies must be finite and >= 0 ms")
    if any(p > 3_600_000 for p in params):
        raise ValueError("latencies must be at most one hour")
    a, b = params[0] / 1000.0, (params[1] / 1000.0 if len(params) > 1 else 0.0)
    if kind == "uniform" and b < a:
        raise ValueError("uniform:LOW:HIGH needs LOW <= HIGH")
    return Distribution(kind, a, b)


def _empirical(text: str) -> Distribution:
    points = []
    for item in text.split(","):
        name, _, number = item.strip().partition("=")
        name = name.strip().lower()
        if not name.startswith("p"):
            raise ValueError(f"expected percentiles like p50=20, got {item!r}")
        try:
            p, v = float(name[1:]), float(number)
        except ValueError:
            raise ValueError(f"expected percentiles like p50=20, got {item!r}") from None
        points.append((p, v))
    return _points(points)


def _points(points: list[tuple[float, float]]) -> Distribution:
    if len(points) < 2:
        raise ValueError("an empirical distribution needs at least two percentiles")
    points.sort()
    ps = [p for p, _ in points]
    values = [v for _, v in points]
    if any(not 0 <= p <= 100 for p in ps) or len(set(ps)) != len(ps):
        raise ValueError("percentiles must be distinct and between 0 and 100")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError("latencies must not decrease as the percentile grows")
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError("latencies must be finite and >= 0 ms")
    return Distribution("empirical", points=tuple((p, v / 1000.0) for p, v in points))


def _from_table(table: dict[str, object]) -> Distribution:
    kind = str(table.get("dist", "constant")).lower()
    if kind == "empirical":
        raw = table.get("percentiles")
        if not isinstance(raw, dict):
            raise ValueError("an empirical distribution needs percentiles = {p50 = ..., ...}")
        return _empirical(",".join(f"{k}={v}" for k, v in raw.items()))
    names = {
        "constant": ("value",),
        "normal": ("mean", "stddev"),
        "lognormal": ("mean", "stddev"),
        "uniform": ("low", "high"),
    }.get(kind)
    if names is None:
        raise ValueError(f"unknown distribution {kind!r}")
    unknown = set(table) - {"dist", *names}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} for {kind}")
    try:
        params = [float(table[n]) for n in names]  # type: ignore[arg-type]
    except KeyError as e:
        raise ValueError(f"{kind} needs {', '.join(names)}; missing {e.args[0]}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{kind} parameters must be numbers") from None
    return _checked(kind, params)


class Timing:
    """
    Token ``t`` (0-based) of every choice is out at ``at(t)`` seconds.
    Never changed once made: plans share one (L{LatencyModel.fixed}).
    """

    __slots__ = ("itl", "table", "ttft")

    def __init__(self, ttft: float, itl: float, table: list[float] | None = None) -> None:
        self.ttft = ttft
        self.itl = itl
        self.table = table

    def at(self, token: int) -> float:
        if token <= 0:
            return self.ttft
        table = self.table
        if table is None:
            return self.ttft + token * self.itl
        return table[token] if token < len(table) else table[-1]


def _fixed(model: LatencyModel) -> Timing | None:
    """A model's L{LatencyModel.fixed} Timing, if it has one."""
    ttft, itl = model.ttft, model.itl
    if ttft.constant and itl.constant and model.prefill_per_token == 0:
        return Timing(ttft.a, itl.a)
    return None


@attrs.frozen
class LatencyModel:
    """How long a model takes: to the first token, and per token after it."""

    ttft: Distribution = _ZERO
    itl: Distribution = _ZERO
    prefill_per_token: float = 0.0  # seconds per prompt token
    #: The one Timing of every plan when nothing is drawn and the prompt's
    #: length changes nothing (constant latencies, no prefill cost: the
    #: default), built once so that planning such a request calls nothing.
    fixed: Timing | None = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_fixed, takes_self=True)
    )

    @property
    def instant(self) -> bool:
        """No time passes at all: streams need no pacing."""
        return (
            self.ttft.constant and self.ttft.a == 0 and self.itl.constant and self.itl.a == 0
        ) and self.prefill_per_token == 0

    def first_token(self, rng: np.random.Generator, prompt_tokens: int) -> float:
        base = self.ttft.a if self.ttft.constant else float(self.ttft.sample(rng, 1)[0])
        return base + self.prefill_per_token * prompt_tokens

    def times(self, rng: np.random.Generator, ttft: float, tokens: int) -> Timing:
        """When each of ``tokens`` tokens is out, after the request arrived."""
        if self.itl.constant:
            return Timing(ttft, self.itl.a)
        gaps = self.itl.sample(rng, max(tokens - 1, 0))
        return Timing(ttft, 0.0, [ttft, *(ttft + np.cumsum(gaps)).tolist()])

    def timing(self, rng: np.random.Generator, prompt_tokens: int, tokens: int) -> Timing:
        """
        When each of ``tokens`` tokens of an answer to ``prompt_tokens``
        prompt tokens is out: the first token's time drawn, then the rest.
        """
        fixed = self.fixed
        if fixed is not None:
            return fixed
        return self.times(rng, self.first_token(rng, prompt_tokens), tokens)
