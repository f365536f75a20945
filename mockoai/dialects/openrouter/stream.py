# -*- test-case-name: tests.test_openrouter -*-
"""
``: OPENROUTER PROCESSING`` comments while a stream waits for its first
token.  One L{Processing} per model beats on the model's L{Pacer}: one
waiter for all its waiting streams, never a timer per stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mockoai.sim.pacing import Pacer, Waiter

if TYPE_CHECKING:
    from mockoai.pipeline.dialect import Answer

COMMENT = b": OPENROUTER PROCESSING\n\n"


class Processing:
    """Sends L{COMMENT} every ``interval`` seconds to a model's streams awaiting a first token."""

    def __init__(self, pacer: Pacer, interval: float) -> None:
        self.pacer = pacer
        self.interval = interval
        self.waiting: dict[Answer, None] = {}
        self._waiter: Waiter | None = None
        self.beats = 0

    def add(self, stream: Answer) -> None:
        """``stream`` has sent its headers and waits: comment now and on every beat."""
        if self.interval <= 0:
            return
        stream.request.write(COMMENT)
        self.waiting[stream] = None
        if self._waiter is None:
            self._waiter = self.pacer.after(self.interval, self._beat)

    def discard(self, stream: Answer) -> None:
        self.waiting.pop(stream, None)
        if not self.waiting and self._waiter is not None:
            self.pacer.cancel(self._waiter)
            self._waiter = None

    def _beat(self) -> None:
        self._waiter = None
        self.beats += 1
        for stream in list(self.waiting):
            stream.request.write(COMMENT)
        if self.waiting:
            self._waiter = self.pacer.after(self.interval, self._beat)
