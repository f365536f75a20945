"""Latency distributions: parsing, sampling, the per-model model and token timing."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim import latency
from mockoai.sim.latency import Distribution, LatencyModel, constant, parse
from tests.optional import needs_scipy, stats


class ParseTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse(20), Distribution("constant", 0.02))
        self.assertEqual(parse("20"), Distribution("constant", 0.02))
        self.assertEqual(parse("normal:20:3"), Distribution("normal", 0.02, 0.003))
        self.assertEqual(parse("lognormal:20:8"), Distribution("lognormal", 0.02, 0.008))
        self.assertEqual(parse("uniform:10:30"), Distribution("uniform", 0.01, 0.03))
        empirical = parse("p50=20, p99=45,p90=28")
        self.assertEqual(empirical.kind, "empirical")
        self.assertEqual(empirical.points, ((50.0, 0.02), (90.0, 0.028), (99.0, 0.045)))

    def test_tables(self) -> None:
        self.assertEqual(
            parse({"dist": "normal", "mean": 20, "stddev": 3}), Distribution("normal", 0.02, 0.003)
        )
        self.assertEqual(parse({"dist": "uniform", "low": 1, "high": 2}).b, 0.002)
        table = parse({"dist": "empirical", "percentiles": {"p50": 10, "p99": 30}})
        self.assertEqual(table.points, ((50.0, 0.01), (99.0, 0.03)))

    def test_errors(self) -> None:
        for bad, fragment in [
            ("gauss:1:2", "unknown distribution"),
            ("normal:20", "takes 2 parameter"),
            ("normal:a:b", "must be numbers"),
            ("uniform:30:10", "LOW <= HIGH"),
            ("-5", ">= 0"),
            ("p50=20", "at least two"),
            ("p50=30,p90=20", "must not decrease"),
            ("p50=1,x90=2", "percentiles like"),
            (True, "expected a latency"),
            ({"dist": "normal", "mean": 1}, "missing stddev"),
            ({"dist": "normal", "mean": 1, "stddev": 1, "x": 2}, "unknown key"),
            ("abc", "expected a number"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse(bad)
            self.assertIn(fragment, str(caught.exception), bad)

    def test_describe_round_trips(self) -> None:
        for text in ["20", "normal:20:3", "lognormal:20:8", "uniform:10:30", "p50=20,p99=45"]:
            self.assertEqual(parse(parse(text).describe()), parse(text))


class SamplingTests(SynchronousTestCase):
    size = 20000

    def sample(self, text: str, seed: int = 1) -> np.ndarray:
        return parse(text).sample(np.random.default_rng(seed), self.size)

    def test_constant(self) -> None:
        self.assertTrue((self.sample("7") == 0.007).all())

    @needs_scipy
    def test_normal(self) -> None:
        values = self.sample("normal:20:3")
        self.assertGreater(stats.kstest(values, "norm", args=(0.02, 0.003)).pvalue, 0.001)

    def test_normal_clamped_at_zero(self) -> None:
        values = self.sample("normal:1:5")
        self.assertEqual(values.min(), 0.0)
        self.assertGreater((values == 0).mean(), 0.3)

    def test_lognormal_mean_and_stddev(self) -> None:
        values = self.sample("lognormal:20:8")
        self.assertLess(abs(values.mean() - 0.02), 0.0005)
        self.assertLess(abs(values.std() - 0.008), 0.0005)
        self.assertGreater(values.min(), 0)

    @needs_scipy
    def test_uniform(self) -> None:
        values = self.sample("uniform:10:30")
        self.assertGreater(stats.kstest(values, "uniform", args=(0.01, 0.02)).pvalue, 0.001)

    def test_empirical_percentiles(self) -> None:
        values = self.sample("p0=5,p50=20,p90=28,p99=45,p100=60")
        for p, expected in [(50, 0.020), (90, 0.028), (99, 0.045)]:
            self.assertLess(abs(np.percentile(values, p) - expected), expected * 0.03)
        self.assertEqual(parse("p50=20,p90=28").percentile(70), 0.024)

    def test_seeded_repeats(self) -> None:
        self.assertTrue((self.sample("normal:20:3", 5) == self.sample("normal:20:3", 5)).all())

    def test_percentile_of_configured(self) -> None:
        self.assertAlmostEqual(parse("normal:200:20").percentile(99), 0.2465, places=3)
        self.assertAlmostEqual(parse("uniform:0:100").percentile(90), 0.09)

    @given(st.floats(0, 1000), st.floats(0, 1000))
    def test_never_negative(self, a: float, b: float) -> None:
        for kind in ("normal", "lognormal"):
            values = parse(f"{kind}:{a}:{b}").sample(np.random.default_rng(0), 50)
            self.assertTrue((values >= 0).all())


class ModelTests(SynchronousTestCase):
    def test_first_token_includes_prefill(self) -> None:
        model = LatencyModel(constant(0.2), constant(0.02), prefill_per_token=0.0001)
        self.assertAlmostEqual(model.first_token(np.random.default_rng(), 1000), 0.3)

    def test_instant(self) -> None:
        self.assertTrue(LatencyModel().instant)
        self.assertFalse(LatencyModel(itl=constant(0.001)).instant)
        self.assertFalse(LatencyModel(prefill_per_token=0.001).instant)

    def test_constant_timing(self) -> None:
        timing = LatencyModel(itl=constant(0.02)).times(np.random.default_rng(), 0.5, 10)
        self.assertEqual([timing.at(t) for t in (0, 1, 9)], [0.5, 0.52, 0.5 + 9 * 0.02])
        self.assertIsNone(timing.table)

    def test_sampled_timing_is_cumulative(self) -> None:
        model = LatencyModel(itl=parse("uniform:10:30"))
        timing = model.times(np.random.default_rng(3), 0.1, 100)
        times = [timing.at(t) for t in range(100)]
        self.assertEqual(times[0], 0.1)
        gaps = np.diff(times)
        self.assertTrue(((gaps >= 0.01) & (gaps <= 0.03)).all())
        self.assertEqual(timing.at(500), times[-1])

    @given(
        st.sampled_from(["0", "200", "normal:200:20", "p50=100,p99=300"]),
        st.sampled_from(["0", "20", "lognormal:20:8"]),
        st.sampled_from([0.0, 0.0001]),
        st.integers(0, 5000),
        st.integers(0, 300),
    )
    def test_timing_draws_first_token_then_times(
        self, ttft: str, itl: str, prefill: float, prompt: int, tokens: int
    ) -> None:
        # The Timing made once for a model with nothing to draw is the one drawn each time.
        model = LatencyModel(parse(ttft), parse(itl), prefill)
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        timing = model.timing(a, prompt, tokens)
        expected = model.times(b, model.first_token(b, prompt), tokens)
        self.assertEqual(
            (timing.ttft, timing.itl, timing.table),
            (expected.ttft, expected.itl, expected.table),
        )
        self.assertEqual(a.random(), b.random())
        fixed = ttft in ("0", "200") and itl != "lognormal:20:8" and not prefill
        self.assertIs(model.timing(a, prompt, tokens) is timing, fixed)

    def test_module_mean(self) -> None:
        self.assertAlmostEqual(latency.parse("uniform:10:30").mean, 0.02)
        self.assertAlmostEqual(latency.parse("p0=10,p100=30").mean, 0.02, places=4)
