# -*- test-case-name: tests.test_stats -*-
"""
Latency percentiles and counters per model, for the shutdown log and a
stats endpoint.

A L{Histogram} has fixed log-spaced buckets, as HdrHistogram does: memory
is fixed (about 1,100 buckets for 1 us .. 1 h at 1%), and a percentile is
within the relative precision of the exact one.  Buckets are ``ratio = (1 +
precision)**2`` wide, so the geometric middle of a bucket, which stands
for every value in it, is within ``precision`` of each.  Percentiles
interpolate between order statistics as C{numpy.percentile} does, so the two
agree within that precision; exact minimum and maximum clip the answer,
which makes a constant distribution exact.

Recording is on every request's path, so it only appends the value to a
short list; the list is counted into the buckets in bulk when anything
reads the histogram or it reaches L{PENDING} values (see L{Histogram.record}).
"""

from __future__ import annotations

import math
import platform
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import attrs
import numpy as np

#: Latencies, in seconds: 1 us .. 1 h.
LATENCY_RANGE = (1e-6, 3600.0)
#: Token counts: 1 .. 10 M.
COUNT_RANGE = (1.0, 1e7)
#: The percentiles a snapshot reports.
REPORTED = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
#: The name models beyond L{Stats.max_models} are counted under.
OTHER = "(other)"
#: Values a histogram holds before counting them in: enough that numpy's
#: fixed cost per fold is small per value, few enough (some 32 KB) that
#: every model's histograms together stay small.
PENDING = 1024

#: PyPy's JIT counts value by value faster than numpy (through cpyext) does in bulk.
_BULK = platform.python_implementation() != "PyPy"


class Histogram:
    """
    Counts of values in log-spaced buckets over ``[lowest, highest]``.
    Values below ``lowest`` (and negative or NaN ones, counted as 0) share
    one bucket, reported within ``lowest`` in absolute terms; values above
    ``highest`` share the top one, reported as no more than the maximum.
    With ``integers`` a bucket's value is the nearest whole number inside
    it, so small counts (tokens) come back exact.
    """

    __slots__ = (
        "_buckets",
        "_count",
        "_edges",
        "_inv_log_ratio",
        "_last",
        "_lower",
        "_max",
        "_min",
        "_offset",
        "_pending",
        "_top",
        "_total",
        "_values",
        "_weighted",
        "highest",
        "integers",
        "lowest",
        "precision",
    )

    def __init__(
        self,
        lowest: float = LATENCY_RANGE[0],
        highest: float = LATENCY_RANGE[1],
        precision: float = 0.01,
        integers: bool = False,
    ) -> None:
        if not 0 < lowest < highest or not 0 < precision < 1:
            raise ValueError("need 0 < lowest < highest and 0 < precision < 1")
        self.lowest = lowest
        self.highest = highest
        self.precision = precision
        self.integers = integers
        ratio = (1.0 + precision) ** 2
        # Regular buckets 1..m cover [lowest, lowest * ratio**m) with
        # lowest * ratio**m > highest; 0 is below lowest, m + 1 above.
        m = math.floor(math.log(highest / lowest) / math.log(ratio)) + 1
        self._last = m + 1
        self._lower = [0.0] + [lowest * ratio**i for i in range(m + 1)] + [math.inf]
        self._edges = np.array(self._lower)
        self._top = self._lower[self._last]
        self._inv_log_ratio = 1.0 / math.log(ratio)
        self._offset = 1.0 - math.log(lowest) * self._inv_log_ratio
        values = [0.0]
        for i in range(1, m + 1):
            low, high = self._lower[i], self._lower[i + 1]
            middle = math.sqrt(low * high)
            if integers and math.ceil(low) <= math.ceil(high) - 1:
                # Clipping into the whole numbers of the bucket only moves
                # the value closer to every whole number it stands for.
                middle = min(max(middle, math.ceil(low)), math.ceil(high) - 1)
            values.append(middle)
        values.append(self._top)
        self._values = np.array(values)
        self._clear()

    def _clear(self) -> None:
        """Nothing recorded: the state of a new histogram."""
        self._buckets = [0] * (self._last + 1)
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = 0.0
        #: Values recorded, not yet counted in, in their order.
        self._pending: list[float] = []
        #: (index in _pending, n) of the values recorded n != 1 times, flat.
        self._weighted: list[int] = []

    def record(self, value: float, n: int = 1) -> None:
        """
        Count ``value`` (``n`` times: a stream event of n tokens, say).

        It only joins the pending list: a request records half a dozen
        values, and counting each into its bucket at once cost more than
        the rest of its bookkeeping (L{ModelStats.completed} appends to the
        lists itself, for the same reason).
        """
        pending = self._pending
        pending.append(value)
        if n != 1:
            weighted = self._weighted
            weighted.append(len(pending) - 1)
            weighted.append(n)
        if len(pending) >= PENDING:
            self._fold()

    def _fold_each(self) -> None:
        """
        Count the pending values into their buckets one by one: on PyPy,
        and the reference the bulk fold is tested against.
        """
        pending = self._pending
        if not pending:
            return
        times = [1] * len(pending)
        weighted = self._weighted
        for k in range(0, len(weighted), 2):
            times[weighted[k]] = weighted[k + 1]
        self._pending = []
        self._weighted = []
        lowest, top, last = self.lowest, self._top, self._last
        inv_log_ratio, offset, lower = self._inv_log_ratio, self._offset, self._lower
        buckets = self._buckets
        count, total, low, high = self._count, self._total, self._min, self._max
        for value, n in zip(pending, times):
            if lowest <= value < top:
                i = int(math.log(value) * inv_log_ratio + offset)
                # The logarithm can land one bucket off at an edge; the bounds
                # are exact, so a value always lies in the bucket it counts in.
                if value < lower[i]:
                    i -= 1
                elif value >= lower[i + 1]:
                    i += 1
            elif value >= top:
                i = last
            else:  # below lowest, negative or NaN
                if not value >= 0.0:
                    value = 0.0
                i = 0
            buckets[i] += n
            count += n
            total += value * n
            if value > high:
                high = value
            if value < low:
                low = value
        self._count, self._total, self._min, self._max = count, total, low, high

    def _fold_bulk(self) -> None:
        """
        Count the pending values into their buckets with numpy: the same
        buckets, count, extremes and total (summed in recording order) as
        L{_fold_each}, at a fraction of the cost per value on CPython.
        """
        pending = self._pending
        if not pending:
            return
        # struct converts a list of Python numbers faster than numpy does.
        values = np.frombuffer(struct.pack(f"{len(pending)}d", *pending)).copy()
        pending.clear()
        low = values.min()
        if not low >= 0.0:  # NaN or negative: counted as 0
            values[~(values >= 0.0)] = 0.0
            low = values.min()
        high = values.max()
        # The bucket whose exact bounds hold the value (the log of the
        # one-by-one count is corrected to it); values past the top, the last.
        index = np.searchsorted(self._edges, values, side="right") - 1
        np.minimum(index, self._last, out=index)
        counts = np.bincount(index, minlength=self._last + 1)
        used = np.flatnonzero(counts)
        buckets = self._buckets
        for i, n in zip(used.tolist(), counts[used].tolist()):
            buckets[i] += n
        count = len(values)
        weighted = self._weighted
        at = weighted[0::2]
        times = weighted[1::2]
        weighted.clear()
        for i, n in zip(index[at].tolist(), times):  # few: n != 1 is rare
            buckets[i] += n - 1
            count += n - 1
        with np.errstate(all="ignore"):  # inf * 0 and overflows: what Python's floats make of them
            if times:
                values[at] *= times
            # Added one by one in order, as _fold_each adds them.
            values[0] += self._total
            self._total = float(np.cumsum(values)[-1])
        self._count += count
        if high > self._max:
            self._max = float(high)
        if low < self._min:
            self._min = float(low)

    #: Counting the pending values in (see _BULK).
    _fold = _fold_bulk if _BULK else _fold_each

    @property
    def count(self) -> int:
        """Values recorded (each as often as it was)."""
        self._fold()
        return self._count

    @property
    def total(self) -> float:
        """Their sum."""
        self._fold()
        return self._total

    @property
    def _counts(self) -> list[int]:
        """The counts by bucket, as a list."""
        self._fold()
        return self._buckets

    @property
    def mean(self) -> float:
        """The exact mean; 0 when empty."""
        self._fold()
        return self._total / self._count if self._count else 0.0

    @property
    def max(self) -> float:
        """The exact maximum; 0 when empty."""
        self._fold()
        return self._max

    @property
    def min(self) -> float:
        """The exact minimum; 0 when empty."""
        self._fold()
        return self._min if self._count else 0.0

    def percentile(self, p: float) -> float:
        """
        The ``p``-th percentile (0..100), interpolated between order
        statistics like C{numpy.percentile}'s default; 0 when empty.
        """
        return self.percentiles([p])[0]

    def percentiles(self, ps: list[float]) -> list[float]:
        """Several percentiles over one pass of the counts."""
        self._fold()
        if not self._count:
            return [0.0] * len(ps)
        cumulative = np.cumsum(self._buckets)
        out = []
        for p in ps:
            rank = (self._count - 1) * min(max(p, 0.0), 100.0) / 100.0
            below = math.floor(rank)
            value = self._order_statistic(cumulative, below)
            fraction = rank - below
            if fraction > 0:
                above = self._order_statistic(cumulative, below + 1)
                value += fraction * (above - value)
            out.append(value)
        return out

    def _order_statistic(self, cumulative: np.ndarray[Any, Any], k: int) -> float:
        """The value standing for the k-th smallest recorded one (0-based)."""
        if k <= 0:
            return self._min
        if k >= self._count - 1:
            return self._max  # the extremes are known exactly
        bucket = int(np.searchsorted(cumulative, k, side="right"))
        return min(max(float(self._values[bucket]), self._min), self._max)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this one (same layout); returns self."""
        if (other.lowest, other.highest, other.precision, other.integers) != (
            self.lowest,
            self.highest,
            self.precision,
            self.integers,
        ):
            raise ValueError("cannot merge histograms with different buckets")
        self._fold()
        other._fold()
        buckets = self._buckets
        for i, n in enumerate(other._buckets):
            if n:
                buckets[i] += n
        self._count += other._count
        self._total += other._total
        self._max = max(self._max, other._max)
        self._min = min(self._min, other._min)
        return self

    def cumulative(self, bounds: list[float]) -> list[int]:
        """
        Values at or below each bound, for Prometheus ``le`` buckets: a
        bucket of ours counts under every bound at or above its lower edge,
        so a value exactly on a bound (a configured delay) is counted in it
        and one at most ``2 * precision`` above it may be too.
        """
        self._fold()
        cumulative = np.cumsum(self._buckets)
        edges = np.searchsorted(self._edges, bounds, side="right") - 1
        return [int(cumulative[i]) for i in edges]

    def state(self) -> dict[str, Any]:
        """JSON-able raw state (nonzero buckets only), for L{from_state} elsewhere."""
        self._fold()
        return {
            "b": [(i, n) for i, n in enumerate(self._buckets) if n],
            "count": self._count,
            "total": self._total,
            "min": self._min if self._count else None,
            "max": self._max,
        }

    def load(self, state: dict[str, Any]) -> Histogram:
        """Add a L{state} of a histogram with this layout into this one; returns self."""
        self._fold()
        buckets = self._buckets
        for i, n in state["b"]:
            buckets[i] += n
        self._count += state["count"]
        self._total += state["total"]
        self._max = max(self._max, state["max"])
        if state["min"] is not None:
            self._min = min(self._min, state["min"])
        return self

    def of_buckets(self, counts: Mapping[int, int]) -> Histogram:
        """
        A new histogram of this layout holding ``counts`` by bucket index: the
        difference of two L{state}s, say, which is what was recorded between
        them (the dashboard's sliding window).  Those values' exact extremes
        are unknown, so the values of the outermost buckets stand in for them.
        """
        h = self._empty()
        used = sorted(i for i, n in counts.items() if n > 0)
        if not used:
            return h
        values = self._values
        for i in used:
            n = counts[i]
            h._buckets[i] += n
            h._count += n
            h._total += float(values[i]) * n
        h._min = float(values[used[0]])
        h._max = float(values[used[-1]])
        return h

    def _empty(self) -> Histogram:
        """An empty histogram sharing this one's layout (read-only) instead of rebuilding it."""
        h = Histogram.__new__(Histogram)
        for name in (
            "lowest", "highest", "precision", "integers",
            "_last", "_lower", "_edges", "_top", "_inv_log_ratio", "_offset", "_values",
        ):  # fmt: skip
            setattr(h, name, getattr(self, name))
        h._clear()
        return h

    def summary(self, scale: float = 1.0, digits: int = 2) -> dict[str, float | int]:
        """count, mean, p50, p90, p99, max: values times ``scale``, rounded."""
        values = [self.mean, *self.percentiles([p for _, p in REPORTED]), self.max]
        names = ["mean", *(name for name, _ in REPORTED), "max"]
        out: dict[str, float | int] = {"count": self._count}
        for name, value in zip(names, values):
            out[name] = round(value * scale, digits)
        return out


def latency_histogram() -> Histogram:
    return Histogram(*LATENCY_RANGE)


def count_histogram() -> Histogram:
    return Histogram(*COUNT_RANGE, integers=True)


#: Latency metrics (seconds, reported in ms) and count metrics, by name.
LATENCIES = ("queue", "ttft", "itl", "e2e")
COUNTS = ("prompt_tokens", "completion_tokens")


class Finished(Protocol):
    """A finished choice (L{mockoai.sim.sampling.ChoicePlan})."""

    finish_reason: str


class Recorder(Protocol):
    """
    What the request path records into: a L{ModelStats}, or a request's
    L{mockoai.pipeline.outcome.Outcome} that passes every call on to one.
    """

    @property
    def itl(self) -> Histogram: ...

    def queued(self, seconds: float) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def completed(
        self,
        e2e: float,
        ttft: float | None = None,
        queue: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        choices: Iterable[Finished] = (),
        tokens: int = 0,
    ) -> None: ...

    def reject(self, status: int = 429, code: str | None = None) -> None: ...

    def cancel(self, tokens: int = 0) -> None: ...


@attrs.define
class ModelStats:
    """
    One model's numbers.  Latencies are recorded in seconds: ``queue`` from
    arrival to the start of work, ``ttft`` to the first token out, ``itl``
    between tokens, ``e2e`` to the last byte.  Counters: ``requests``
    arrived, ``errors`` answered per status (rejections included),
    ``rejected`` refused by admission control (rate limits, full queues),
    ``cancelled`` abandoned by the client before the end (``cancelled_tokens``
    had been sent by then), ``finished`` choices per finish reason.
    """

    queue: Histogram = attrs.field(factory=latency_histogram)
    ttft: Histogram = attrs.field(factory=latency_histogram)
    itl: Histogram = attrs.field(factory=latency_histogram)
    e2e: Histogram = attrs.field(factory=latency_histogram)
    prompt_tokens: Histogram = attrs.field(factory=count_histogram)
    completion_tokens: Histogram = attrs.field(factory=count_histogram)
    requests: int = 0
    errors: dict[int, int] = attrs.field(factory=dict)
    rejected: int = 0
    cancelled: int = 0
    cancelled_tokens: int = 0
    finished: dict[str, int] = attrs.field(factory=dict)

    def arrived(self) -> None:
        self.requests += 1

    def failed(self, status: int, code: str | None = None) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1

    def reject(self, status: int = 429, code: str | None = None) -> None:
        """A refusal by admission control: counted as rejected and as an error."""
        self.rejected += 1
        self.failed(status)

    def refused(self, status: int) -> None:
        """A request answered with an error before any work: 429/503/529 are admission."""
        if status in (429, 503, 529):
            self.reject(status)
        else:
            self.failed(status)

    def cancel(self, tokens: int = 0) -> None:
        self.cancelled += 1
        self.cancelled_tokens += tokens

    def queued(self, seconds: float) -> None:
        """Time from arrival to admission by the engine."""
        self.queue.record(seconds)

    def first_token(self, seconds: float) -> None:
        """Time from arrival to the first token out."""
        self.ttft.record(seconds)

    def completed(
        self,
        e2e: float,
        ttft: float | None = None,
        queue: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        choices: Iterable[Finished] = (),
        tokens: int = 0,
    ) -> None:
        """
        A whole answer went out: its latencies (seconds), token counts and
        choices.  A plain answer gives its length in ``tokens`` too: they
        went out together after the first, at ``ttft``, so each of their
        ``tokens - 1`` gaps counts in ``itl`` as their mean.
        """
        # Every answer's path: its values join the histograms' pending
        # lists here, as Histogram.record would add them, without its calls.
        e2e_pending = self.e2e._pending
        e2e_pending.append(e2e)
        finished = self.finished
        for choice in choices:
            reason = choice.finish_reason
            finished[reason] = finished.get(reason, 0) + 1
        if ttft is not None:
            self.ttft._pending.append(ttft)
            if tokens > 1:
                self.itl.record((e2e - ttft) / (tokens - 1), tokens - 1)
        if queue is not None:
            self.queue._pending.append(queue)
        if prompt_tokens is not None:
            self.prompt_tokens._pending.append(prompt_tokens)
        if completion_tokens is not None:
            self.completion_tokens._pending.append(completion_tokens)
        # An answer adds one value to each list, so e2e's length bounds the
        # others' too (within twice: record checks what else they get).
        if len(e2e_pending) >= PENDING:
            for _, histogram in self.histograms():
                histogram._fold()

    def histograms(self) -> Iterator[tuple[str, Histogram]]:
        for name in (*LATENCIES, *COUNTS):
            yield name, getattr(self, name)

    def merge(self, other: ModelStats) -> ModelStats:
        for name, histogram in self.histograms():
            histogram.merge(getattr(other, name))
        self.requests += other.requests
        for status, n in other.errors.items():
            self.errors[status] = self.errors.get(status, 0) + n
        self.rejected += other.rejected
        self.cancelled += other.cancelled
        self.cancelled_tokens += other.cancelled_tokens
        for reason, n in other.finished.items():
            self.finished[reason] = self.finished.get(reason, 0) + n
        return self

    def state(self) -> dict[str, Any]:
        """JSON-able raw state: what a sibling worker needs to merge this in."""
        return {
            "histograms": {name: histogram.state() for name, histogram in self.histograms()},
            "requests": self.requests,
            "errors": [(status, n) for status, n in self.errors.items()],
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "cancelled_tokens": self.cancelled_tokens,
            "finished": self.finished,
        }

    def load(self, state: dict[str, Any]) -> ModelStats:
        """Add a L{state} into this one; returns self."""
        for name, histogram in self.histograms():
            histogram.load(state["histograms"][name])
        self.requests += state["requests"]
        for status, n in state["errors"]:
            self.errors[status] = self.errors.get(status, 0) + n
        self.rejected += state["rejected"]
        self.cancelled += state["cancelled"]
        self.cancelled_tokens += state["cancelled_tokens"]
        for reason, n in state["finished"].items():
            self.finished[reason] = self.finished.get(reason, 0) + n
        return self

    def snapshot(self) -> dict[str, Any]:
        """JSON-able: counters, then ``<metric>_ms`` for latencies and counts as is."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "completed": self.e2e.count,
            "errors": {str(status): n for status, n in sorted(self.errors.items())},
            "rejected": self.rejected,
            "cancelled": self.cancelled,
        }
        for name in LATENCIES:
            out[f"{name}_ms"] = getattr(self, name).summary(scale=1000.0)
        for name in COUNTS:
            out[name] = getattr(self, name).summary()
        return out

    def summary_line(self, name: str) -> str:
        """One line for the log: counters, then p50/p90/p99 of what was measured."""
        parts = [f"{self.requests} requests", f"{self.e2e.count} completed"]
        if self.errors:
            detail = ", ".join(f"{s}: {n}" for s, n in sorted(self.errors.items()))
            parts.append(f"{sum(self.errors.values())} errors ({detail})")
        if self.rejected:
            parts.append(f"{self.rejected} rejected")
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        line = f"{name}: " + ", ".join(parts)
        for metric in LATENCIES:
            histogram: Histogram = getattr(self, metric)
            if histogram.count:
                p50, p90, p99 = (v * 1000 for v in histogram.percentiles([50, 90, 99]))
                line += f"; {metric} p50/p90/p99 {p50:.2f}/{p90:.2f}/{p99:.2f} ms"
        for metric in COUNTS:
            histogram = getattr(self, metric)
            if histogram.count:
                line += f"; {metric} mean {histogram.mean:.1f}"
        return line


class Stats:
    """
    L{ModelStats} per model name.  Names are client-chosen with
    ``--any-model``, so past ``max_models`` (about 50 KB each, and up to
    200 KB more while values wait to be counted in) new names are counted
    together under L{OTHER}.
    """

    def __init__(self, max_models: int = 256) -> None:
        self.max_models = max_models
        self._models: dict[str, ModelStats] = {}

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def for_model(self, name: str) -> ModelStats:
        stats = self._models.get(name)
        if stats is None:
            if len(self._models) >= self.max_models:
                name = OTHER
                stats = self._models.get(name)
            if stats is None:
                stats = self._models[name] = ModelStats()
        return stats

    def clear(self) -> None:
        """Every model's numbers gone (the admin API's reset)."""
        self._models.clear()

    def merge(self, other: Stats) -> Stats:
        for name, stats in other._models.items():
            self.for_model(name).merge(stats)
        return self

    def items(self) -> list[tuple[str, ModelStats]]:
        """(model, stats), models in name order."""
        return sorted(self._models.items())

    def state(self) -> dict[str, dict[str, Any]]:
        """JSON-able raw state of every model, for L{load} in another process."""
        return {name: stats.state() for name, stats in self._models.items()}

    def load(self, state: dict[str, dict[str, Any]]) -> Stats:
        """Add a L{state} into this one; returns self."""
        for name, model in state.items():
            self.for_model(name).load(model)
        return self

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{model: ModelStats.snapshot()}``, models in name order."""
        return {name: self._models[name].snapshot() for name in sorted(self._models)}

    def summary_lines(self) -> list[str]:
        """One line per model, in name order, for the shutdown log."""
        return [self._models[name].summary_line(name) for name in sorted(self._models)]
