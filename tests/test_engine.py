"""The continuous-batching engine, stepped on a Clock."""

from __future__ import annotations

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mockoai.pipeline import errors
from mockoai.sim.engine import Engine, EngineConfig, Sequence
from mockoai.sim.latency import LatencyModel, constant, parse
from mockoai.sim.pacing import Pacer


class Recorder:
    """A listener that notes when things happen."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.admitted_at: float | None = None
        self.tokens: list[float] = []
        self.error: errors.APIError | None = None

    def admitted(self) -> None:
        self.admitted_at = self.clock.seconds()

    def advanced(self, produced: int) -> None:
        assert produced == len(self.tokens) + 1
        self.tokens.append(self.clock.seconds())

    def failed(self, error: errors.APIError) -> None:
        self.error = error


def engine(ttft: float = 0.2, itl: float = 0.02, **config: float) -> tuple[Clock, Pacer, Engine]:
    clock = Clock()
    pacer = Pacer(clock, slack=0)
    model = LatencyModel(constant(ttft), constant(itl))
    settings = {"max_running": 4, **config}
    return clock, pacer, Engine(pacer, model, EngineConfig(**settings), model="m")  # type: ignore[arg-type]


def submit(eng: Engine, clock: Clock, tokens: int = 5, width: int = 1) -> tuple[Recorder, Sequence]:
    recorder = Recorder(clock)
    sequence = Sequence(recorder, width, tokens, prompt_tokens=10)
    eng.submit(sequence)
    return recorder, sequence


def run(clock: Clock, seconds: float) -> None:
    """Advance ``seconds``, stopping exactly at every timer on the way."""
    end = clock.seconds() + seconds
    while True:
        calls = clock.getDelayedCalls()
        if not calls:
            break
        due = min(c.getTime() for c in calls)
        if due > end:
            break
        clock.advance(max(0.0, due - clock.seconds()))
    clock.advance(max(0.0, end - clock.seconds()))


class StepTests(SynchronousTestCase):
    def test_single_sequence_matches_the_latency_model(self) -> None:
        clock, _, eng = engine()
        recorder, _ = submit(eng, clock, tokens=5)
        self.assertEqual(recorder.admitted_at, 0.0)
        clock.advance(0.2)
        clock.advance(0.02)
        clock.advance(0.02)
        clock.advance(0.02)
        clock.advance(0.02)
        self.assertEqual([round(t, 6) for t in recorder.tokens], [0.2, 0.22, 0.24, 0.26, 0.28])
        self.assertEqual(eng.used, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_timer_for_many_streams(self) -> None:
        clock, _, eng = engine(max_running=100)
        recorders = [submit(eng, clock, tokens=50)[0] for _ in range(100)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        run(clock, 0.5)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        run(clock, 2.0)
        self.assertTrue(all(len(r.tokens) == 50 for r in recorders))

    def test_joining_waits_for_the_step_boundary_and_its_prefill_slows_the_batch(self) -> None:
        clock, _, eng = engine(ttft=0.1, itl=0.02)
        first, _ = submit(eng, clock, tokens=20)
        clock.advance(0.1)  # first token of the first request
        clock.advance(0.005)  # mid-step
        second, _ = submit(eng, clock, tokens=3)
        self.assertAlmostEqual(second.admitted_at or 0, 0.105)
        clock.advance(0.015)  # step ends at 0.12: the first gets token 2
        self.assertEqual(len(first.tokens), 2)
        self.assertEqual(second.tokens, [])
        # the next step decodes the first and prefills the second: 0.02 + 0.1
        run(clock, 0.1201)
        self.assertEqual(len(first.tokens), 3)
        self.assertAlmostEqual(second.tokens[0], 0.24)
        self.assertAlmostEqual(first.tokens[2] - first.tokens[1], 0.12)

    def test_batch_slowdown(self) -> None:
        clock, _, eng = engine(ttft=0.0, itl=0.02, max_running=4, batch_slowdown=1.0)
        recorders = [submit(eng, clock, tokens=10)[0] for _ in range(4)]
        run(clock, 1.0)
        gaps = np.diff(recorders[0].tokens)
        # batch of 4 of 4: itl * (1 + 1 * 3/4)
        self.assertAlmostEqual(float(gaps[-1]), 0.02 * 1.75, places=6)

    def test_throughput_ceiling(self) -> None:
        clock, _, eng = engine(ttft=0.0, itl=0.001, max_running=50, max_tokens_per_s=1000)
        recorders = [submit(eng, clock, tokens=20)[0] for _ in range(50)]
        run(clock, 2.0)
        gap = recorders[0].tokens[-1] - recorders[0].tokens[-2]
        self.assertAlmostEqual(gap, 50 / 1000, places=6)  # the knee: 50 streams share 1000 tok/s

    def test_width_counts_against_capacity(self) -> None:
        clock, _, eng = engine(max_running=4)
        submit(eng, clock, tokens=5, width=3)
        recorder, _ = submit(eng, clock, tokens=5, width=2)
        self.assertIsNone(recorder.admitted_at)
        self.assertEqual(eng.waiting_count, 1)

    def test_oversized_request_admitted_when_idle(self) -> None:
        clock, _, eng = engine(max_running=2)
        recorder, _ = submit(eng, clock, width=8)
        self.assertEqual(recorder.admitted_at, 0.0)


class QueueTests(SynchronousTestCase):
    def test_fifo_queue(self) -> None:
        clock, _, eng = engine(max_running=1, max_waiting=5)
        first, _ = submit(eng, clock, tokens=3)
        second, _ = submit(eng, clock, tokens=3)
        third, _ = submit(eng, clock, tokens=3)
        self.assertEqual(eng.waiting_count, 2)
        run(clock, 0.25)  # first done at 0.24
        self.assertEqual(len(first.tokens), 3)
        self.assertAlmostEqual(second.admitted_at or 0, 0.24)
        self.assertIsNone(third.admitted_at)
        run(clock, 1.0)
        self.assertEqual(len(third.tokens), 3)
        self.assertLess(second.tokens[0], third.tokens[0])

    def test_rejection_beyond_the_queue(self) -> None:
        clock, _, eng = engine(max_running=1, max_waiting=1)
        submit(eng, clock, tokens=100)
        submit(eng, clock)
        with self.assertRaises(errors.APIError) as caught:
            submit(eng, clock)
        error = caught.exception
        self.assertEqual(error.status, 429)
        self.assertEqual(error.code, "rate_limit_exceeded")
        self.assertEqual(dict(error.headers)[b"Retry-After"], b"2")  # 100 tokens x 20 ms

    def test_rejection_status_configurable(self) -> None:
        clock, _, eng = engine(max_running=1, max_waiting=0, reject_status=503)
        submit(eng, clock, tokens=10)
        run(clock, 0.2)
        with self.assertRaises(errors.APIError) as caught:
            submit(eng, clock)
        self.assertEqual(caught.exception.status, 503)
        self.assertEqual(caught.exception.code, "overloaded")
        self.assertEqual(caught.exception.type, errors.SERVER_ERROR)

    def test_queue_timeout(self) -> None:
        clock, _, eng = engine(max_running=1, queue_timeout=0.5, timeout_status=504)
        submit(eng, clock, tokens=1000)
        waiting, _ = submit(eng, clock)
        clock.advance(0.499)
        self.assertIsNone(waiting.error)
        clock.advance(0.001)
        assert waiting.error is not None
        self.assertEqual(waiting.error.status, 504)
        self.assertEqual(waiting.error.code, "queue_timeout")
        self.assertEqual(eng.waiting_count, 0)

    def test_admission_cancels_the_timeout(self) -> None:
        clock, _, eng = engine(max_running=1, queue_timeout=1.0)
        submit(eng, clock, tokens=2)
        waiting, _ = submit(eng, clock, tokens=2)
        run(clock, 2.0)
        self.assertIsNone(waiting.error)
        self.assertEqual(len(waiting.tokens), 2)

    def test_cancel_running_frees_its_place(self) -> None:
        clock, _, eng = engine(max_running=1)
        _, running = submit(eng, clock, tokens=1000)
        waiting, _ = submit(eng, clock, tokens=2)
        clock.advance(0.2)
        eng.cancel(running)
        self.assertEqual(waiting.admitted_at, 0.2)
        run(clock, 1.0)
        self.assertEqual(len(waiting.tokens), 2)

    def test_cancel_waiting(self) -> None:
        clock, _, eng = engine(max_running=1, queue_timeout=1.0)
        submit(eng, clock, tokens=5)
        waiting, sequence = submit(eng, clock)
        eng.cancel(sequence)
        self.assertEqual(eng.waiting_count, 0)
        run(clock, 2.0)
        self.assertIsNone(waiting.error)
        self.assertEqual(waiting.tokens, [])


class JitterTests(SynchronousTestCase):
    def test_step_times_follow_the_distribution(self) -> None:
        clock = Clock()
        pacer = Pacer(clock, slack=0)
        model = LatencyModel(constant(0.0), parse("normal:20:2"))
        eng = Engine(pacer, model, EngineConfig(max_running=1), rng=np.random.default_rng(1))
        recorder = Recorder(clock)
        eng.submit(Sequence(recorder, 1, 2001, 0))
        run(clock, 45.0)
        gaps = np.diff(recorder.tokens)
        self.assertEqual(len(gaps), 2000)
        self.assertLess(abs(float(np.mean(gaps)) - 0.02), 0.0003)
        self.assertLess(abs(float(np.std(gaps)) - 0.002), 0.0003)
