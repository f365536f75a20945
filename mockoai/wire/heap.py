# -*- test-case-name: tests.test_heap -*-
"""
Where CPython puts small objects while the server is under a connection
flood, and handing the memory back afterwards.

CPython's small-object allocator (pymalloc) carves 1 MiB arenas into 16 KiB
pools and returns an arena to the OS only when every block in it is free.
Thousands of slow-loris connections fill dozens of arenas; meanwhile normal
work (an interned name, a timer, a counter's new int) drops a few long-lived
blocks into the holes the flood leaves, and each such block keeps a whole
arena resident after the flood is gone: that, not any leak, is why RSS stayed
~40 MB above its baseline after 10,000 of them.

So while a flood lasts the server *diverts* new small objects to the C heap
(glibc malloc), where a survivor pins one 4 KiB page instead of an arena and
``malloc_trim`` hands back the rest.  Only ``malloc``/``calloc`` change:
``realloc`` and ``free`` stay pymalloc's, which already pass any block they
did not allocate to the C heap, so blocks from either side are freed by the
right allocator whenever they die, and the switch back is just as safe.  It
uses the public ``PyMem_GetAllocator``/``PyMem_SetAllocator`` and is done
only where it is known to hold: CPython with pymalloc, no debug hooks or
tracemalloc in the way, and a C library with ``malloc_trim``.  Nothing
changes on the request path: off a flood the allocator is pymalloc as ever.

Large request bodies leave memory behind in glibc's heap, not pymalloc's:
they arrive as 64 KiB reads (heap chunks, below the mmap threshold) and are
joined into one buffer, and once glibc has freed a buffer it had mapped it
raises that threshold, so the next large bodies come from the heap too.
Freed, they leave holes that ``free`` does not give back: 60 concurrent
15 MB bodies left RSS at ~1 GB after their connections closed.  So the
stacks tell L{LargeBodies} about every body of 1 MiB or more, and once
64 MiB of them have gone by the heap is trimmed, a second later (when their
requests have let go of them), at most once a second.  PyPy frees them only
in a major collection, which a heap grown by such a flood puts off for long
(40 bodies of 12 MB left 550 MB behind): there the trim collects first.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import sys
import sysconfig
from typing import Any, ClassVar

#: PyMemAllocatorDomain: PyMem_RawMalloc, PyMem_Malloc, PyObject_Malloc.
_RAW, _MEM, _OBJ = 0, 1, 2


class _Allocator(ctypes.Structure):
    """PyMemAllocatorEx: a context and four C functions."""

    _fields_: ClassVar[list[tuple[str, type[ctypes.c_void_p]]]] = [
        ("ctx", ctypes.c_void_p),
        ("malloc", ctypes.c_void_p),
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.c_void_p),
    ]

    def same(self, other: _Allocator) -> bool:
        return all(getattr(self, name) == getattr(other, name) for name, _ in self._fields_)


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class SmallObjectHeap:
    """Switches new small objects between pymalloc and the C heap (see module doc)."""

    def __init__(self) -> None:
        self.diverted = False
        self._trim = _malloc_trim()
        self._api: Any = None
        self._pymalloc: dict[int, _Allocator] = {}
        self._divert: dict[int, _Allocator] = {}
        if self._supported():
            self._prepare()

    @property
    def available(self) -> bool:
        """Whether diverting can happen in this interpreter."""
        return bool(self._divert)

    def _supported(self) -> bool:
        return (
            sys.implementation.name == "cpython"
            and not sysconfig.get_config_var("Py_GIL_DISABLED")
            and os.environ.get("PYTHONMALLOC", "pymalloc") == "pymalloc"
            and not sys.flags.dev_mode
            and self._trim is not None
        )

    def _prepare(self) -> None:
        # PyDLL: the calls keep the GIL, so no other thread allocates meanwhile.
        api = ctypes.pythonapi
        for name in ("PyMem_GetAllocator", "PyMem_SetAllocator"):
            getattr(api, name).argtypes = [ctypes.c_int, ctypes.POINTER(_Allocator)]
            getattr(api, name).restype = None
        current = {}
        for domain in (_RAW, _MEM, _OBJ):
            current[domain] = _Allocator()
            api.PyMem_GetAllocator(domain, ctypes.byref(current[domain]))
        raw = current[_RAW]
        # Hooks (debug, tracemalloc) carry a context; pymalloc and malloc do not.
        if any(allocator.ctx for allocator in current.values()):
            return
        if current[_OBJ].malloc == raw.malloc:
            return  # no pymalloc: nothing to divert
        self._api = api
        for domain in (_MEM, _OBJ):
            own = current[domain]
            self._pymalloc[domain] = own
            self._divert[domain] = _Allocator(None, raw.malloc, raw.calloc, own.realloc, own.free)

    def _swap(self, expected: dict[int, _Allocator], new: dict[int, _Allocator]) -> bool:
        """Install ``new`` if the allocators are still ``expected`` (nobody hooked since)."""
        now = _Allocator()
        for domain, allocator in expected.items():
            self._api.PyMem_GetAllocator(domain, ctypes.byref(now))
            if not now.same(allocator):
                return False
        for domain, allocator in new.items():
            self._api.PyMem_SetAllocator(domain, ctypes.byref(allocator))
        return True

    def divert(self) -> bool:
        """New small objects go to the C heap from now on (if available)."""
        if self.diverted or not self._divert:
            return False
        self.diverted = self._swap(self._pymalloc, self._divert)
        return self.diverted

    def restore(self) -> bool:
        """New small objects go to pymalloc again."""
        if not self.diverted:
            return False
        self.diverted = False
        return self._swap(self._divert, self._pymalloc)

    def release(self, collect: bool = True) -> None:
        """Back to pymalloc, collect cycles (if asked), and hand free C heap back to the OS."""
        self.restore()
        if collect:
            gc.collect()
        self.trim()

    def trim(self) -> None:
        """Hand the C heap's free memory back to the OS (a no-op without malloc_trim)."""
        if self._trim is not None:
            with contextlib.suppress(OSError):
                self._trim(0)


#: The one per process (the allocators are process-wide).
HEAP = SmallObjectHeap()


#: PyPy's garbage collector frees large bodies only when asked to (see the module doc).
_COLLECT_BEFORE_TRIM = platform.python_implementation() == "PyPy"
#: Request bodies this large are noted by the HTTP stacks.
LARGE_BODY = 1 << 20
#: Bytes of large bodies after which the heap is trimmed...
TRIM_BODY_BYTES = 64 << 20
#: ...this many seconds later.
TRIM_BODY_DELAY = 1.0


class LargeBodies:
    """Trims the C heap after large request bodies (see the module doc)."""

    def __init__(self, clock: Any, heap: SmallObjectHeap = HEAP) -> None:
        self.clock = clock
        self.heap = heap
        self._bytes = 0
        self._call: Any = None
        #: Trims done, since start.
        self.trims = 0

    def freed(self, size: int) -> None:
        """A body of ``size`` bytes is done with (or about to be)."""
        self._bytes += size
        if self._bytes >= TRIM_BODY_BYTES and self._call is None:
            self._call = self.clock.callLater(TRIM_BODY_DELAY, self._trim)

    def _trim(self) -> None:
        self._call = None
        self._bytes = 0
        self.trims += 1
        if _COLLECT_BEFORE_TRIM:
            gc.collect()
        self.heap.trim()

    def stop(self) -> None:
        """Cancel a pending trim (at shutdown, and in tests)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
