"""The Pacer: many waiters, one reactor timer, driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim.pacing import Pacer


def advance_to(clock: Clock, when: float) -> None:
    """Advance ``clock`` to exactly ``when`` (never backwards)."""
    clock.advance(max(0.0, when - clock.seconds()))
    if clock.seconds() < when:  # float rounding of seconds + (when - seconds)
        clock.rightNow = when
        clock.advance(0)


def run_all(clock: Clock, limit: int = 10_000) -> int:
    """Fire every pending call in time order, stepping exactly to each; count steps."""
    steps = 0
    while clock.getDelayedCalls():
        steps += 1
        if steps > limit:
            raise AssertionError("timers never settle")
        advance_to(clock, min(c.getTime() for c in clock.getDelayedCalls()))
    return steps


class Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []

    def __call__(self, name: str) -> Callable[[], None]:
        def call() -> None:
            self.calls.append((name, self.clock.seconds()))

        return call

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class PacerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pacer = Pacer(self.clock, slack=0)
        self.record = Recorder(self.clock)

    def test_runs_at_due_time_not_before(self) -> None:
        self.pacer.at(1.5, self.record("a"))
        self.clock.advance(1.25)
        self.assertEqual(self.record.calls, [])
        self.clock.advance(0.125)
        self.assertEqual(self.record.calls, [])
        self.clock.advance(0.125)
        self.assertEqual(self.record.calls, [("a", 1.5)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_after_is_relative(self) -> None:
        self.clock.advance(10)
        self.pacer.after(0.5, self.record("a"))
        self.clock.advance(0.25)
        self.assertEqual(self.record.calls, [])
        self.clock.advance(0.25)
        self.assertEqual(self.record.calls, [("a", 10.5)])

    def test_past_due_runs_on_next_turn(self) -> None:
        self.clock.advance(5)
        self.pacer.at(1.0, self.record("late"))
        self.assertEqual(self.record.calls, [])  # never synchronously
        self.clock.advance(0)
        self.assertEqual(self.record.calls, [("late", 5.0)])

    def test_one_timer_for_many_waiters(self) -> None:
        for i in range(100):
            self.pacer.at(1.0 + (i * 7 % 100) / 64, self.record(str(i)))
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.pacer), 100)
        # The one timer is armed for the earliest waiter.
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 1.0)
        # An earlier newcomer re-arms it; still one timer.
        self.pacer.at(0.5, self.record("early"))
        calls = self.clock.getDelayedCalls()
        self.assertEqual([c.getTime() for c in calls], [0.5])
        # A later newcomer leaves it alone.
        self.pacer.at(50.0, self.record("late"))
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [0.5])
        while self.clock.getDelayedCalls():
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            advance_to(self.clock, self.clock.getDelayedCalls()[0].getTime())
        self.assertEqual(len(self.record.calls), 102)
        times = [t for _, t in self.record.calls]
        self.assertEqual(times, sorted(times))
        self.assertEqual(self.record.calls[0], ("early", 0.5))
        self.assertEqual(self.record.calls[-1], ("late", 50.0))
        self.assertEqual(len(self.pacer), 0)

    def test_same_due_run_in_insertion_order(self) -> None:
        for name in "abcde":
            self.pacer.at(1.0, self.record(name))
        self.clock.advance(1.0)
        self.assertEqual(self.record.names, list("abcde"))
        self.assertEqual(self.pacer.wakeups, 1)

    def test_cancelled_waiters_never_run(self) -> None:
        a = self.pacer.at(1.0, self.record("a"))
        self.pacer.at(2.0, self.record("b"))
        c = self.pacer.at(3.0, self.record("c"))
        self.pacer.cancel(a)
        self.pacer.cancel(c)
        self.assertEqual(len(self.pacer), 1)
        run_all(self.clock)
        self.assertEqual(self.record.calls, [("b", 2.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Cancelling twice, or after running, is harmless.
        self.pacer.cancel(a)
        self.assertEqual(len(self.pacer), 0)

    def test_cancel_from_inside_a_call(self) -> None:
        waiters = {}

        def first() -> None:
            self.record("first")()
            self.pacer.cancel(waiters["second"])

        self.pacer.at(1.0, first)
        waiters["second"] = self.pacer.at(1.0, self.record("second"))
        self.pacer.at(1.0, self.record("third"))
        self.clock.advance(1.0)
        self.assertEqual(self.record.names, ["first", "third"])

    def test_rescheduled_waiter_runs_once_at_its_new_time(self) -> None:
        waiter = self.pacer.at(1.0, self.record("a"))
        self.pacer.schedule(waiter, 3.0)  # later: the 1.0 entry goes stale
        self.clock.advance(1.0)
        self.assertEqual(self.record.calls, [])
        self.assertEqual(len(self.pacer), 1)
        self.pacer.schedule(waiter, 2.0)  # earlier again
        self.clock.advance(1.0)
        self.assertEqual(self.record.calls, [("a", 2.0)])
        self.clock.advance(5.0)
        self.assertEqual(self.record.calls, [("a", 2.0)])
        self.assertEqual(len(self.pacer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled_then_rearmed_in_the_same_pass_waits(self) -> None:
        # A stream paused and resumed by an earlier call of the pass re-arms
        # its waiter for later: the entry already picked for this pass is stale.
        waiter = self.pacer.at(1.0, self.record("stream"))

        def pause_and_resume() -> None:
            self.pacer.cancel(waiter)
            self.pacer.schedule(waiter, 4.0)

        self.pacer.at(0.5, pause_and_resume)
        self.pacer.slack = 1.0  # both in one pass
        self.clock.advance(0.5)
        self.assertEqual(self.record.calls, [])
        self.clock.advance(3.5)
        self.assertEqual(self.record.calls, [("stream", 4.0)])

    def test_calls_scheduled_inside_a_call_wait_for_a_later_pass(self) -> None:
        # Clock.advance keeps firing whatever is due, so "later pass" shows as
        # a second wakeup of the pacer (a real reactor does I/O in between).
        seen: list[tuple[str, int]] = []

        def inner() -> None:
            seen.append(("inner", self.pacer.wakeups))

        def outer() -> None:
            self.pacer.at(self.clock.seconds(), inner)
            self.pacer.at(self.clock.seconds() - 1, inner)  # even one already overdue
            seen.append(("outer", self.pacer.wakeups))

        self.pacer.at(1.0, outer)
        self.pacer.at(1.0, lambda: seen.append(("sibling", self.pacer.wakeups)))
        self.clock.advance(1.0)
        self.assertEqual(seen, [("outer", 1), ("sibling", 1), ("inner", 2), ("inner", 2)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_self_rescheduling_call_does_not_spin(self) -> None:
        runs: list[int] = []

        def again() -> None:
            runs.append(self.pacer.wakeups)
            if len(runs) < 5:
                self.pacer.at(self.clock.seconds(), again)

        self.pacer.at(0.0, again)
        self.clock.advance(0)
        # One run per wakeup: the pacer never loops on its own newcomers.
        self.assertEqual(runs, [1, 2, 3, 4, 5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slack_groups_nearby_waiters(self) -> None:
        pacer = Pacer(self.clock, slack=0.001)
        for due in (1.0, 1.0005, 1.0009, 1.002):
            pacer.at(due, self.record(f"{due}"))
        self.clock.advance(1.0)
        # The three within a millisecond run in one wakeup, a little early.
        self.assertEqual(pacer.wakeups, 1)
        self.assertEqual(self.record.calls, [("1.0", 1.0), ("1.0005", 1.0), ("1.0009", 1.0)])
        run_all(self.clock)
        self.assertEqual(pacer.wakeups, 2)
        self.assertEqual(self.record.names[-1], "1.002")

    def test_without_slack_every_distinct_time_wakes(self) -> None:
        for due in (1.0, 1.0005, 1.0009, 1.002):
            self.pacer.at(due, self.record(f"{due}"))
        run_all(self.clock)
        self.assertEqual(self.pacer.wakeups, 4)
        self.assertEqual([t for _, t in self.record.calls], [1.0, 1.0005, 1.0009, 1.002])

    def test_exception_does_not_stop_the_others(self) -> None:
        def boom() -> None:
            raise ZeroDivisionError("paced call failed")

        self.pacer.at(1.0, self.record("before"))
        self.pacer.at(1.0, boom)
        self.pacer.at(1.0, self.record("after"))
        self.pacer.at(2.0, self.record("later"))
        self.clock.advance(1.0)
        self.assertEqual(self.record.names, ["before", "after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        # The timer is re-armed for what is left.
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [2.0])
        self.clock.advance(1.0)
        self.assertEqual(self.record.names, ["before", "after", "later"])

    def test_stop_clears_everything(self) -> None:
        for i in range(10):
            self.pacer.at(1.0 + i, self.record(str(i)))
        self.pacer.stop()
        self.assertEqual(len(self.pacer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.record.calls, [])
        # Still usable afterwards.
        self.pacer.at(101.0, self.record("again"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)
        self.assertEqual(self.record.calls, [("again", 101.0)])

    def test_stop_from_inside_a_call(self) -> None:
        self.pacer.at(1.0, self.pacer.stop)
        self.pacer.at(1.0, self.record("same pass"))
        self.pacer.at(2.0, self.record("later"))
        run_all(self.clock)
        self.assertEqual(self.record.names, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timer_when_idle(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pacer.at(1.0, self.record("a"))
        self.clock.advance(1.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_large_clock_values(self) -> None:
        # Reactor time is seconds since the epoch: due times that are not
        # exact binary fractions must still run, once, at their time.
        self.clock.advance(1_700_000_000.0)
        start = self.clock.seconds()
        for i in range(1, 51):
            self.pacer.at(start + i * 0.02, self.record(str(i)))
        steps = run_all(self.clock)
        self.assertEqual(self.record.names, [str(i) for i in range(1, 51)])
        self.assertLessEqual(steps, 50)
        for i, (_, t) in enumerate(self.record.calls, 1):
            self.assertGreaterEqual(t, start + i * 0.02)


class PacerProperties(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 200), st.booleans()),
            min_size=1,
            max_size=40,
        ),
        st.sampled_from([0.0, 1 / 64, 1 / 8]),
    )
    def test_each_active_waiter_runs_once_in_order(
        self, spec: list[tuple[int, bool]], slack: float
    ) -> None:
        clock = Clock()
        pacer = Pacer(clock, slack=slack)
        ran: list[tuple[int, float]] = []
        waiters = []
        for i, (due, _) in enumerate(spec):
            waiters.append(pacer.at(due / 16, lambda i=i: ran.append((i, clock.seconds()))))
            self.assertLessEqual(len(clock.getDelayedCalls()), 1)
        for waiter, (_, cancel) in zip(waiters, spec):
            if cancel:
                pacer.cancel(waiter)
        while clock.getDelayedCalls():
            self.assertEqual(len(clock.getDelayedCalls()), 1)
            advance_to(clock, clock.getDelayedCalls()[0].getTime())
        expected = sorted(
            (i for i, (_, cancel) in enumerate(spec) if not cancel),
            key=lambda i: (spec[i][0], i),
        )
        self.assertEqual([i for i, _ in ran], expected)
        for i, when in ran:
            due = spec[i][0] / 16
            self.assertGreaterEqual(when, due - slack)
            self.assertLessEqual(when, due)
        self.assertEqual(len(pacer), 0)
