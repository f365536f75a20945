"""
mockoai.wire.heap: small objects go to the C heap during a connection flood, and
the memory comes back to the OS afterwards.
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import textwrap

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops import service
from mockoai.wire import guard
from mockoai.wire.guard import HeaderDeadlines
from mockoai.wire.heap import HEAP, _Allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _allocator(domain: int) -> _Allocator:
    allocator = _Allocator()
    ctypes.pythonapi.PyMem_GetAllocator(domain, ctypes.byref(allocator))
    return allocator


class FakeHeap:
    def __init__(self) -> None:
        self.diverted = False
        self.calls: list[str] = []

    def divert(self) -> bool:
        self.calls.append("divert")
        self.diverted = True
        return True

    def restore(self) -> bool:
        self.calls.append("restore")
        self.diverted = False
        return True

    def release(self, collect: bool = True) -> None:
        self.calls.append("release" if collect else "trim")
        self.diverted = False


class Waiter:
    def header_timed_out(self) -> None:
        pass


class DivertTests(SynchronousTestCase):
    """When HeaderDeadlines diverts and releases (a fake heap: no allocator swap)."""

    def setUp(self) -> None:
        self.heap = FakeHeap()
        self.patch(guard, "HEAP", self.heap)
        self.patch(guard, "DIVERT_AT", 3)
        self.clock = Clock()
        self.deadlines = HeaderDeadlines(self.clock, 10.0)

    def heads(self, n: int) -> list[Waiter]:
        """``n`` connections whose request heads began and are waiting."""
        waiters = [Waiter() for _ in range(n)]
        for waiter in waiters:
            self.deadlines.start(waiter)
        return waiters

    def test_flood_diverts_then_releases_twice_once_none_wait(self) -> None:
        waiters = self.heads(2)
        self.assertEqual(self.heap.calls, [])  # two waiting heads are no flood
        waiters += self.heads(2)
        self.assertEqual(self.heap.calls, ["divert"])
        for waiter in waiters:
            self.deadlines.lost(waiter)
        self.clock.advance(1)
        self.assertEqual(self.heap.calls, ["divert", "release"])
        self.assertFalse(self.heap.diverted)
        self.clock.advance(guard.RETRIM_AFTER)
        self.assertEqual(self.heap.calls, ["divert", "release", "release"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_diverted_releases_even_when_heads_completed(self) -> None:
        # A flood of slow but finished heads is no churn, yet must not stay diverted.
        waiters = self.heads(3)
        for waiter in waiters:
            self.deadlines.done(waiter)
        self.clock.advance(1)
        # Served, not abandoned: no cycles to collect, just the trim.
        self.assertEqual(self.heap.calls, ["divert", "trim"])

    def test_busy_clients_after_a_flood_restore_then_release(self) -> None:
        # A thousand keep-alive clients connecting at once are a flood, then
        # always have a few heads in flight: pymalloc comes back once fewer
        # than a quarter of DIVERT_AT wait, the trim once none does.
        self.patch(guard, "DIVERT_AT", 8)
        waiters = self.heads(8)
        self.assertEqual(self.heap.calls, ["divert"])
        for waiter in waiters[:6]:
            self.deadlines.done(waiter)
        self.assertEqual(self.heap.calls, ["divert"])  # 2 still wait: not below 8 // 4
        self.deadlines.done(waiters[6])
        self.assertEqual(self.heap.calls, ["divert", "restore"])
        self.assertFalse(self.heap.diverted)
        self.clock.advance(5)
        self.assertEqual(self.heap.calls, ["divert", "restore"])  # one still waits
        self.deadlines.done(waiters[7])
        self.clock.advance(1)
        self.assertEqual(self.heap.calls, ["divert", "restore", "trim"])

    def test_no_release_while_the_flood_is_back(self) -> None:
        waiters = self.heads(3)
        for waiter in waiters:
            self.deadlines.lost(waiter)
        self.deadlines.start(Waiter())  # reconnected before the release fired
        self.clock.advance(1)
        self.assertEqual(self.heap.calls, ["divert"])
        self.assertTrue(self.heap.diverted)

    def test_the_flood_table_is_replaced(self) -> None:
        self.heads(3)
        flood_table = self.deadlines._began
        self.clock.advance(11)  # all shed
        self.clock.advance(1)
        self.assertIsNot(self.deadlines._began, flood_table)
        self.assertEqual(len(self.deadlines), 0)


class SmallObjectHeapTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not HEAP.available:
            self.skipTest("no pymalloc to divert from in this interpreter")
        self.addCleanup(HEAP.restore)

    def test_divert_swaps_malloc_only_and_restore_swaps_back(self) -> None:
        raw, obj = _allocator(0), _allocator(2)
        self.assertNotEqual(obj.malloc, raw.malloc)
        self.assertTrue(HEAP.divert())
        self.assertFalse(HEAP.divert())  # already
        diverted = _allocator(2)
        self.assertEqual((diverted.malloc, diverted.calloc), (raw.malloc, raw.calloc))
        self.assertEqual((diverted.realloc, diverted.free), (obj.realloc, obj.free))
        self.assertEqual(_allocator(1).malloc, raw.malloc)
        # Objects from either allocator die under the other one.
        on_c_heap = [str(i) * 2 for i in range(20000)]
        self.assertTrue(HEAP.restore())
        self.assertTrue(_allocator(2).same(obj))
        on_pymalloc = [str(i) * 2 for i in range(20000)]
        HEAP.divert()
        del on_pymalloc
        HEAP.restore()
        del on_c_heap
        self.assertFalse(HEAP.diverted)

    def test_hooked_allocator_is_left_alone(self) -> None:
        import tracemalloc

        tracemalloc.start()
        try:
            self.assertFalse(HEAP.divert())  # tracemalloc's hooks are in the way
            self.assertFalse(HEAP.diverted)
        finally:
            tracemalloc.stop()


FLOOD = textwrap.dedent(
    """
    import gc, json, sys
    from twisted.internet.task import Clock
    from mockoai.wire import guard
    from mockoai.wire.guard import HeaderDeadlines

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    class Conn:
        # What a slow-loris connection holds: a few dozen small objects.
        def __init__(self, i):
            self.parts = [(str(i) * 3, {"k": i, "v": [i, i + 1]}, float(i)) for _ in range(8)]

        def header_timed_out(self):
            pass

    if sys.argv[1] == "off":
        guard.DIVERT_AT = 10**9
    clock = Clock()
    deadlines = HeaderDeadlines(clock, 10.0)
    survivors = []
    before = rss()
    conns = []
    for i in range(12000):
        conns.append(Conn(i))
        deadlines.start(conns[-1])
    peak = rss()
    for i in range(0, 12000, 40):
        # Churn leaves holes all over the flood's memory, and normal work
        # done meanwhile fills a few of them with objects that stay.
        conns[i].parts = None
        survivors.append((str(i) * 5, [i]))
    for conn in conns:
        deadlines.lost(conn)
    del conns, conn
    clock.advance(1)
    clock.advance(guard.RETRIM_AFTER)
    print(json.dumps({"before": before, "peak": peak, "after": rss()}))
    """
)


class FloodMemoryTests(SynchronousTestCase):
    """A flood's memory goes back to the OS even with survivors made meanwhile."""

    def setUp(self) -> None:
        if not HEAP.available or not os.path.exists("/proc/self/status"):
            self.skipTest("needs CPython with pymalloc, glibc and /proc")

    def flood(self, mode: str) -> dict[str, float]:
        import json

        env = {**os.environ, "PYTHONPATH": REPO}
        out = subprocess.run(
            [sys.executable, "-c", FLOOD, mode], capture_output=True, env=env, check=True
        )
        return json.loads(out.stdout)

    def test_rss_returns_to_baseline(self) -> None:
        rss = self.flood("on")
        self.assertGreater(rss["peak"] - rss["before"], 30)  # the flood was real
        self.assertLess(rss["after"] - rss["before"], 8)

    def test_without_diverting_survivors_pin_the_flood(self) -> None:
        # The control: what the diversion is for (pymalloc keeps pinned arenas).
        rss = self.flood("off")
        self.assertGreater(rss["peak"] - rss["before"], 30)
        self.assertGreater(rss["after"] - rss["before"], 20)


class SettleHeapTests(SynchronousTestCase):
    """What the service does to the GC once it is ready to serve."""

    def test_freezes_startup_objects_and_raises_thresholds(self) -> None:
        if not hasattr(gc, "freeze"):
            self.skipTest("CPython's gc.freeze/set_threshold only")
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        self.addCleanup(gc.unfreeze)
        survivor = [object()]
        service.settle_heap()
        self.assertEqual(gc.get_threshold(), service.GC_THRESHOLDS)
        self.assertGreater(gc.get_freeze_count(), 0)
        # Frozen: the collector no longer walks it.
        self.assertFalse(any(o is survivor for o in gc.get_objects()))

    def test_pypy_is_told_about_its_nursery(self) -> None:
        # PyPy sizes its nursery from the environment at start: only a hint can help.
        advice = service.gc_advice({}, "PyPy")
        assert advice is not None
        self.assertIn(f"PYPY_GC_NURSERY={service.PYPY_NURSERY}", advice)
        self.assertIsNone(service.gc_advice({"PYPY_GC_NURSERY": "32M"}, "PyPy"))
        self.assertIsNone(service.gc_advice({}, "CPython"))
