"""Latency histograms and per-model statistics."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.stats import (
    OTHER,
    PENDING,
    Histogram,
    ModelStats,
    Stats,
    count_histogram,
    latency_histogram,
)

PRECISION = 0.01
#: Float slack on top of the bucket precision.
EPS = 1e-9

positive_latencies = st.lists(
    st.floats(min_value=1e-6, max_value=3600.0, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=300,
)


class PrecisionMixin:
    def assertWithin(self, actual: float, expected: float, precision: float = PRECISION) -> None:
        bound = precision * abs(expected) + EPS
        if abs(actual - expected) > bound:
            raise AssertionError(f"{actual!r} is not within {precision:.2%} of {expected!r}")


class HistogramTests(PrecisionMixin, SynchronousTestCase):
    def test_layout(self) -> None:
        histogram = Histogram()
        # 1 us .. 1 h at 1%: buckets (1.01**2) wide, about 1,100 of them.
        self.assertEqual(len(histogram._counts), 1108)
        self.assertAlmostEqual(histogram._lower[2] / histogram._lower[1], 1.0201)
        self.assertGreater(histogram._top, 3600.0)

    def test_uniform_1_to_1000_ms(self) -> None:
        values = np.arange(1, 1001) / 1000.0
        histogram = latency_histogram()
        for value in values:
            histogram.record(float(value))
        self.assertEqual(histogram.count, 1000)
        self.assertAlmostEqual(histogram.mean, 0.5005)
        self.assertEqual(histogram.max, 1.0)
        self.assertEqual(histogram.min, 0.001)
        for p in (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100):
            self.assertWithin(histogram.percentile(p), float(np.percentile(values, p)))
        # And roughly where a uniform distribution puts them.
        self.assertWithin(histogram.percentile(50), 0.5005)
        self.assertWithin(histogram.percentile(90), 0.9001)
        self.assertWithin(histogram.percentile(99), 0.99001)

    def test_constant_is_exact(self) -> None:
        histogram = latency_histogram()
        for _ in range(500):
            histogram.record(0.0237)
        for p in (0, 50, 90, 99, 100):
            self.assertEqual(histogram.percentile(p), 0.0237)
        self.assertAlmostEqual(histogram.mean, 0.0237)
        self.assertEqual(histogram.max, 0.0237)

    def test_bimodal(self) -> None:
        values = [0.010] * 900 + [0.500] * 100
        histogram = latency_histogram()
        for value in values:
            histogram.record(value)
        p50, p90, p99 = histogram.percentiles([50, 90, 99])
        self.assertWithin(p50, 0.010)
        # Between the modes numpy interpolates: 10 ms + 0.1 * 490 ms.
        self.assertWithin(p90, float(np.percentile(values, 90)))
        self.assertWithin(p90, 0.059)
        self.assertWithin(p99, 0.500)
        self.assertAlmostEqual(histogram.mean, 0.059)

    def test_empty(self) -> None:
        histogram = latency_histogram()
        self.assertEqual(histogram.count, 0)
        self.assertEqual(histogram.mean, 0.0)
        self.assertEqual(histogram.max, 0.0)
        self.assertEqual(histogram.min, 0.0)
        self.assertEqual(histogram.percentile(50), 0.0)
        self.assertEqual(histogram.percentiles([50, 99]), [0.0, 0.0])
        self.assertEqual(
            histogram.summary(),
            {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0},
        )

    def test_single_value(self) -> None:
        histogram = latency_histogram()
        histogram.record(0.15)
        self.assertEqual(histogram.percentiles([0, 50, 100]), [0.15, 0.15, 0.15])

    def test_record_n_counts_n_times(self) -> None:
        once, many = latency_histogram(), latency_histogram()
        many.record(0.02, n=5)
        many.record(0.5)
        for _ in range(5):
            once.record(0.02)
        once.record(0.5)
        self.assertEqual(many._counts, once._counts)
        self.assertEqual(many.count, 6)
        self.assertAlmostEqual(many.mean, once.mean)
        self.assertEqual(many.percentile(90), once.percentile(90))

    def test_out_of_range_values(self) -> None:
        histogram = latency_histogram()
        for value in (-0.5, math.nan, 0.0, 1e-9):
            histogram.record(value)
        self.assertEqual(histogram._counts[0], 4)
        self.assertEqual(histogram.max, 1e-9)
        self.assertEqual(histogram.min, 0.0)
        self.assertEqual(histogram.percentile(100), 1e-9)
        histogram.record(1e6)
        histogram.record(math.inf)
        self.assertEqual(histogram._counts[-1], 2)
        self.assertEqual(histogram.max, math.inf)

    def test_edges_land_in_their_own_bucket(self) -> None:
        histogram = latency_histogram()
        for i in range(1, len(histogram._counts) - 1):
            histogram.record(histogram._lower[i])
        self.assertEqual(histogram._counts[1:-1], [1] * (len(histogram._counts) - 2))

    def test_integer_counts_are_exact_when_small(self) -> None:
        histogram = count_histogram()
        values = list(range(1, 42))
        for value in values:
            histogram.record(value)
        self.assertEqual(histogram.percentile(50), 21.0)
        self.assertEqual(histogram.percentile(0), 1.0)
        self.assertEqual(histogram.percentile(25), 11.0)
        self.assertEqual(histogram.percentile(100), 41.0)
        big = count_histogram()
        for value in range(1, 4097):
            big.record(value)
        self.assertWithin(big.percentile(50), 2048.5)
        self.assertWithin(big.percentile(99), float(np.percentile(range(1, 4097), 99)))

    def test_merge(self) -> None:
        rng = np.random.default_rng(7)
        values = rng.lognormal(-3, 1, 2000).tolist()
        whole, left, right = latency_histogram(), latency_histogram(), latency_histogram()
        for value in values:
            whole.record(value)
        for value in values[:700]:
            left.record(value)
        for value in values[700:]:
            right.record(value)
        self.assertIs(left.merge(right), left)
        self.assertEqual(left._counts, whole._counts)
        self.assertEqual(left.count, 2000)
        self.assertEqual(left.max, whole.max)
        self.assertEqual(left.min, whole.min)
        self.assertAlmostEqual(left.mean, whole.mean)
        self.assertEqual(left.percentiles([50, 90, 99]), whole.percentiles([50, 90, 99]))
        # Merging an empty one changes nothing.
        left.merge(latency_histogram())
        self.assertEqual(left.percentiles([50, 90, 99]), whole.percentiles([50, 90, 99]))
        self.assertEqual(left.min, whole.min)

    def test_merge_needs_the_same_buckets(self) -> None:
        self.assertRaises(ValueError, latency_histogram().merge, count_histogram())
        self.assertRaises(ValueError, Histogram(precision=0.01).merge, Histogram(precision=0.02))

    def test_rejects_nonsense_layouts(self) -> None:
        self.assertRaises(ValueError, Histogram, 0.0, 1.0)
        self.assertRaises(ValueError, Histogram, 2.0, 1.0)
        self.assertRaises(ValueError, Histogram, 1.0, 2.0, 0.0)

    def test_coarser_precision_is_honoured(self) -> None:
        histogram = Histogram(precision=0.05)
        values = np.linspace(0.001, 2.0, 777)
        for value in values:
            histogram.record(float(value))
        self.assertLess(len(histogram._counts), 250)
        for p in (10, 50, 90, 99):
            self.assertWithin(histogram.percentile(p), float(np.percentile(values, p)), 0.05)

    @settings(max_examples=200, deadline=None)
    @given(positive_latencies)
    def test_percentiles_are_ordered_and_match_numpy(self, values: list[float]) -> None:
        histogram = latency_histogram()
        for value in values:
            histogram.record(value)
        p50, p90, p99 = histogram.percentiles([50, 90, 99])
        self.assertLessEqual(p50, p90)
        self.assertLessEqual(p90, p99)
        self.assertLessEqual(p99, histogram.max)
        self.assertEqual(histogram.max, max(values))
        for p in (0, 50, 90, 99, 100):
            self.assertWithin(histogram.percentile(p), float(np.percentile(values, p)))

    @settings(max_examples=100, deadline=None)
    @given(st.floats(min_value=1e-6, max_value=3600.0, allow_nan=False))
    def test_every_value_is_within_precision_of_its_bucket(self, value: float) -> None:
        histogram = latency_histogram()
        histogram.record(value)
        histogram.record(1e-6)  # so the clip to min/max does not hide the bucket value
        histogram.record(3600.0)
        self.assertWithin(histogram.percentile(50), value)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(1, 100_000), min_size=1, max_size=200))
    def test_counts_match_numpy(self, values: list[int]) -> None:
        histogram = count_histogram()
        for value in values:
            histogram.record(value)
        for p in (0, 50, 90, 99, 100):
            self.assertWithin(histogram.percentile(p), float(np.percentile(values, p)))


def _fold_with(
    fold: str, layout: Histogram, batches: Sequence[Sequence[tuple[float, int]]]
) -> Histogram:
    """``layout``'s buckets fed ``batches``, counted in by its ``fold`` after each."""
    histogram = layout._empty()
    for batch in batches:
        for value, n in batch:
            histogram.record(value, n)
        getattr(histogram, fold)()
    return histogram


def _same(test: SynchronousTestCase, bulk: Histogram, each: Histogram) -> None:
    test.assertEqual(bulk.state()["b"], each.state()["b"])  # the buckets used, by index
    test.assertEqual(bulk._count, each._count)
    if not (math.isnan(bulk._total) and math.isnan(each._total)):
        test.assertEqual(bulk._total, each._total)
    test.assertEqual(bulk._min, each._min)
    test.assertEqual(bulk._max, each._max)


_LATENCIES = latency_histogram()
_COUNTS = count_histogram()


def _near_edges(layout: Histogram) -> st.SearchStrategy[float]:
    """Bucket bounds and their neighbouring floats: where a logarithm lands one off."""
    edge = st.sampled_from(layout._lower[:-1])
    return st.one_of(
        edge,
        edge.map(lambda x: math.nextafter(x, -math.inf)),
        edge.map(lambda x: math.nextafter(x, math.inf)),
    )


_any_value = st.one_of(
    st.floats(),  # NaN, infinities, negatives, subnormals, huge
    st.floats(min_value=1e-7, max_value=5000.0),
    _near_edges(_LATENCIES),
    st.sampled_from([0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e-6, 3600.0]),
)
_times = st.one_of(st.just(1), st.integers(0, 1000))
_batches = st.lists(st.lists(st.tuples(_any_value, _times), max_size=60), max_size=5)
#: Token counts: whole numbers as the request path records them (exact as floats).
_any_count = st.one_of(
    st.integers(-3, 2**53),
    st.integers(0, 300),
    _near_edges(_COUNTS).map(math.ceil),
    _near_edges(_COUNTS),
)
_count_batches = st.lists(st.lists(st.tuples(_any_count, _times), max_size=60), max_size=5)


class PendingTests(SynchronousTestCase):
    """Values are counted in later, in bulk: with the same result as one by one."""

    @settings(max_examples=300, deadline=None)
    @given(_batches)
    def test_bulk_counts_as_one_by_one(self, batches: list[list[tuple[float, int]]]) -> None:
        bulk = _fold_with("_fold_bulk", _LATENCIES, batches)
        each = _fold_with("_fold_each", _LATENCIES, batches)
        _same(self, bulk, each)

    @settings(max_examples=200, deadline=None)
    @given(_count_batches)
    def test_bulk_counts_tokens_as_one_by_one(self, batches: list[list[tuple[int, int]]]) -> None:
        bulk = _fold_with("_fold_bulk", _COUNTS, batches)
        each = _fold_with("_fold_each", _COUNTS, batches)
        _same(self, bulk, each)

    def test_every_edge_and_its_neighbours(self) -> None:
        for layout in (_LATENCIES, _COUNTS, Histogram(precision=0.05)):
            values = [
                v
                for x in layout._lower[:-1]
                for v in (math.nextafter(x, -math.inf), x, math.nextafter(x, math.inf))
            ]
            batches = [[(v, 1) for v in values]]
            _same(
                self,
                _fold_with("_fold_bulk", layout, batches),
                _fold_with("_fold_each", layout, batches),
            )

    def test_readers_see_what_is_pending(self) -> None:
        histogram = latency_histogram()
        histogram.record(0.25)
        histogram.record(0.5, 3)
        self.assertEqual((histogram.count, histogram.total), (4, 1.75))
        self.assertEqual((histogram.min, histogram.max), (0.25, 0.5))
        self.assertEqual(histogram.state()["count"], 4)
        histogram.record(1.0)
        self.assertEqual(histogram.percentile(100), 1.0)
        self.assertEqual(histogram.summary()["count"], 5)

    def test_pending_values_are_bounded(self) -> None:
        histogram = latency_histogram()
        for _ in range(3 * PENDING + 5):
            histogram.record(0.01)
        self.assertLess(len(histogram._pending), PENDING)
        stats = ModelStats()
        for _ in range(3 * PENDING + 5):
            stats.completed(0.5, 0.1, 0.0, 20, 8, (), 8)
            stats.ttft.record(0.1)
        for _, h in stats.histograms():
            self.assertLessEqual(len(h._pending), 2 * PENDING)
        self.assertEqual(stats.itl.count, 7 * (3 * PENDING + 5))
        self.assertEqual(stats.ttft.count, 2 * (3 * PENDING + 5))


def sample_model() -> ModelStats:
    stats = ModelStats()
    for i in range(100):
        stats.arrived()
        stats.completed(
            e2e=1.0 + i / 100,
            ttft=0.15,
            queue=0.0123456,
            prompt_tokens=20,
            completion_tokens=256,
        )
        stats.itl.record(0.025, n=255)
    stats.arrived()
    stats.reject(429)
    stats.arrived()
    stats.failed(500)
    stats.arrived()
    stats.cancel()
    return stats


class ModelStatsTests(PrecisionMixin, SynchronousTestCase):
    def test_snapshot_shape_and_rounding(self) -> None:
        snapshot = sample_model().snapshot()
        self.assertEqual(
            set(snapshot),
            {
                "requests",
                "completed",
                "errors",
                "rejected",
                "cancelled",
                "queue_ms",
                "ttft_ms",
                "itl_ms",
                "e2e_ms",
                "prompt_tokens",
                "completion_tokens",
            },
        )
        self.assertEqual(snapshot["requests"], 103)
        self.assertEqual(snapshot["completed"], 100)
        self.assertEqual(snapshot["errors"], {"429": 1, "500": 1})
        self.assertEqual(snapshot["rejected"], 1)
        self.assertEqual(snapshot["cancelled"], 1)
        # 12.3456 ms, reported in ms and rounded to 0.01 ms.
        self.assertEqual(
            snapshot["queue_ms"],
            {"count": 100, "mean": 12.35, "p50": 12.35, "p90": 12.35, "p99": 12.35, "max": 12.35},
        )
        self.assertEqual(snapshot["ttft_ms"]["p99"], 150.0)
        self.assertEqual(snapshot["itl_ms"]["count"], 25500)
        self.assertEqual(snapshot["itl_ms"]["p50"], 25.0)
        e2e = snapshot["e2e_ms"]
        self.assertEqual(e2e["max"], 1990.0)
        self.assertEqual(e2e["mean"], 1495.0)
        self.assertWithin(e2e["p50"], 1495.0)
        self.assertWithin(e2e["p90"], 1891.0)
        for metric in ("queue_ms", "ttft_ms", "itl_ms", "e2e_ms"):
            for key, value in snapshot[metric].items():
                if key != "count":
                    self.assertEqual(value, round(value, 2), (metric, key))
        self.assertEqual(
            snapshot["completion_tokens"],
            {"count": 100, "mean": 256.0, "p50": 256.0, "p90": 256.0, "p99": 256.0, "max": 256.0},
        )
        self.assertEqual(snapshot["prompt_tokens"]["p50"], 20.0)
        self.assertEqual(json.loads(json.dumps(snapshot)), snapshot)

    def test_empty_snapshot(self) -> None:
        snapshot = ModelStats().snapshot()
        self.assertEqual(snapshot["requests"], 0)
        self.assertEqual(snapshot["errors"], {})
        self.assertEqual(snapshot["e2e_ms"]["count"], 0)
        self.assertEqual(snapshot["e2e_ms"]["p99"], 0.0)
        json.dumps(snapshot, allow_nan=False)

    def test_completed_records_only_what_is_given(self) -> None:
        stats = ModelStats()
        stats.completed(e2e=0.5)
        self.assertEqual(stats.e2e.count, 1)
        self.assertEqual(stats.ttft.count, 0)
        self.assertEqual(stats.queue.count, 0)
        self.assertEqual(stats.prompt_tokens.count, 0)

    @settings(max_examples=100, deadline=None)
    @given(
        st.floats(0.0, 100.0),
        st.floats(0.0, 100.0),
        st.floats(0.0, 1.0),
        st.integers(0, 10**6),
        st.integers(0, 3000),
    )
    def test_a_plain_answer_in_one_call(
        self, e2e: float, ttft: float, queue: float, prompt: int, tokens: int
    ) -> None:
        # What the plain path records in one call, as the calls it replaces recorded it.
        one, calls = ModelStats(), ModelStats()
        for stats in (one, calls):
            stats.completed(0.2, 0.1, 0.0, 5, 2, (), 2)  # something recorded before
        one.completed(e2e, ttft, queue, prompt, tokens, (), tokens)
        calls.completed(e2e, ttft=ttft, queue=queue, prompt_tokens=prompt, completion_tokens=tokens)
        if tokens > 1:
            calls.itl.record((e2e - ttft) / (tokens - 1), tokens - 1)
        self.assertEqual(one.state(), calls.state())

    def test_merge(self) -> None:
        merged = sample_model().merge(sample_model())
        self.assertEqual(merged.requests, 206)
        self.assertEqual(merged.errors, {429: 2, 500: 2})
        self.assertEqual(merged.rejected, 2)
        self.assertEqual(merged.cancelled, 2)
        self.assertEqual(merged.e2e.count, 200)
        self.assertEqual(
            merged.snapshot()["e2e_ms"]["p50"], sample_model().snapshot()["e2e_ms"]["p50"]
        )

    def test_summary_line(self) -> None:
        line = sample_model().summary_line("gpt-4o")
        self.assertTrue(
            line.startswith(
                "gpt-4o: 103 requests, 100 completed, 2 errors (429: 1, 500: 1), "
                "1 rejected, 1 cancelled; queue p50/p90/p99 12.35/12.35/12.35 ms; "
                "ttft p50/p90/p99 150.00/150.00/150.00 ms; itl p50/p90/p99 25.00/25.00/25.00 ms; "
                "e2e p50/p90/p99 "
            ),
            line,
        )
        self.assertTrue(line.endswith("; prompt_tokens mean 20.0; completion_tokens mean 256.0"))
        self.assertEqual(ModelStats().summary_line("m"), "m: 0 requests, 0 completed")


class StatsTests(SynchronousTestCase):
    def test_for_model_creates_once(self) -> None:
        stats = Stats()
        first = stats.for_model("gpt-4o")
        self.assertIs(stats.for_model("gpt-4o"), first)
        self.assertIsNot(stats.for_model("gpt-4o-mini"), first)
        self.assertEqual(len(stats), 2)

    def test_snapshot_and_lines_per_model(self) -> None:
        stats = Stats()
        stats.for_model("b-model").completed(e2e=0.2, ttft=0.1)
        stats.for_model("a-model").failed(400)
        snapshot = stats.snapshot()
        self.assertEqual(list(snapshot), ["a-model", "b-model"])
        self.assertEqual(snapshot["b-model"]["ttft_ms"]["p50"], 100.0)
        self.assertEqual(snapshot["a-model"]["errors"], {"400": 1})
        lines = stats.summary_lines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("a-model: 0 requests, 0 completed, 1 errors (400: 1)"))
        self.assertIn("ttft p50/p90/p99 100.00/100.00/100.00 ms", lines[1])
        self.assertEqual(Stats().summary_lines(), [])
        self.assertEqual(Stats().snapshot(), {})

    def test_model_names_are_bounded(self) -> None:
        stats = Stats(max_models=3)
        for i in range(10):
            stats.for_model(f"m{i}").arrived()
        self.assertEqual(len(stats), 4)  # three named, and everything else together
        self.assertIn(OTHER, stats)
        self.assertEqual(stats.for_model(OTHER).requests, 7)
        self.assertEqual(stats.for_model("m1").requests, 1)

    def test_merge(self) -> None:
        left, right = Stats(), Stats()
        left.for_model("a").completed(e2e=0.1)
        right.for_model("a").completed(e2e=0.3)
        right.for_model("b").cancel()
        left.merge(right)
        self.assertEqual(left.for_model("a").e2e.count, 2)
        self.assertEqual(left.for_model("b").cancelled, 1)
        self.assertEqual(left.snapshot()["a"]["e2e_ms"]["max"], 300.0)
