# -*- test-case-name: tests.test_engine -*-
"""
A simulated continuous-batching inference engine, one per model.

It steps the way vLLM's scheduler does: up to ``max_running`` sequences
(vLLM's ``--max-num-seqs``) are decoded together, each step giving every
running sequence its next token; requests beyond that wait in a bounded
FIFO queue (and time out there), and beyond the queue they are refused.
Newly admitted requests are prefilled in the next step, which that step's
running sequences feel as a longer gap.  A step takes one inter-token
latency, stretched as the batch grows::

    step = itl * (1 + batch_slowdown * (batch - 1) / max_running)

and, with a token-throughput ceiling, never less than ``batch / ceiling``:
past that knee every stream slows down as more join.  One timer per engine,
whatever the number of streams.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Protocol

import numpy as np

from mockoai.apierror import SERVER_ERROR, APIError, OverloadedError
from mockoai.ops.config import EngineConfig
from mockoai.sim.latency import LatencyModel
from mockoai.sim.pacing import Pacer, Waiter

WAITING, JOINING, RUNNING, FINISHED = range(4)


class Listener(Protocol):
    def admitted(self) -> None: ...

    def advanced(self, produced: int) -> None: ...

    def failed(self, error: APIError) -> None: ...


class Sequence:
    """One request inside the engine: ``width`` choices of up to ``tokens`` tokens."""

    __slots__ = (
        "admitted_at",
        "enqueued_at",
        "listener",
        "produced",
        "prompt_tokens",
        "state",
        "timeout",
        "tokens",
        "width",
    )

    def __init__(self, listener: Listener, width: int, tokens: int, prompt_tokens: int) -> None:
        self.listener = listener
        self.width = width
        self.tokens = max(tokens, 1)
        self.prompt_tokens = prompt_tokens
        self.produced = 0
        self.state = WAITING
        self.timeout: Waiter | None = None
        self.enqueued_at = 0.0
        self.admitted_at = 0.0


class Engine:
    """Schedules sequences in steps on one model's L{Pacer}."""

    def __init__(
        self,
        pacer: Pacer,
        latency: LatencyModel,
        config: EngineConfig,
        rng: np.random.Generator | None = None,
        model: str = "",
    ) -> None:
        self.pacer = pacer
        self.clock = pacer.clock
        self.latency = latency
        self.config = config
        self.model = model
        self.rng = rng if rng is not None else np.random.default_rng()
        self.running: list[Sequence] = []
        self.joining: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self.used = 0
        self.steps = 0
        self.last_step = 0.0
        self._step: Waiter | None = None
        self._batch: list[Sequence] = []
        self._step_end = 0.0
        self._ending = False

    @property
    def waiting_count(self) -> int:
        return len(self.waiting)

    @property
    def running_count(self) -> int:
        return self.used

    def load(self) -> float:
        """Share of the engine's sequence slots in use (for KV-cache style gauges)."""
        return self.used / self.config.max_running if self.config.max_running else 0.0

    def kv_tokens(self) -> int:
        """
        Tokens the admitted sequences hold in a KV cache: each one's prompt
        (shared by its choices, as prefix caching shares it) plus every
        choice's output so far.  O(running); read at scrape time only.
        """
        held = 0
        for sequence in (*self._batch, *self.joining):
            if sequence.state != FINISHED:
                held += sequence.prompt_tokens + sequence.width * sequence.produced
        return held

    def submit(self, sequence: Sequence) -> None:
        """Admit, queue, or refuse (raising the L{APIError} to answer)."""
        sequence.enqueued_at = self.clock.seconds()
        if self._fits(sequence) and not self.waiting:
            self._admit(sequence)
            return
        config = self.config
        if len(self.waiting) >= config.max_waiting:
            raise self._refusal()
        self.waiting.append(sequence)
        if config.queue_timeout > 0:
            sequence.timeout = self.pacer.after(
                config.queue_timeout, lambda: self._expire(sequence)
            )

    def cancel(self, sequence: Sequence) -> None:
        """The client went away: free its place at once."""
        if sequence.state == FINISHED:
            return
        if sequence.state == WAITING:
            self._unqueue(sequence)
        else:
            self._retire(sequence)
            self._admit_waiting()
        sequence.state = FINISHED

    def _fits(self, sequence: Sequence) -> bool:
        return self.used + sequence.width <= self.config.max_running or self.used == 0

    def _admit(self, sequence: Sequence) -> None:
        sequence.state = JOINING
        sequence.admitted_at = self.clock.seconds()
        self.used += sequence.width
        self.joining.append(sequence)
        if sequence.timeout is not None:
            self.pacer.cancel(sequence.timeout)
            sequence.timeout = None
        sequence.listener.admitted()
        if self._step is None and not self._ending:
            self._start_step()

    def _admit_waiting(self) -> None:
        while self.waiting and self._fits(self.waiting[0]):
            self._admit(self.waiting.popleft())

    def _unqueue(self, sequence: Sequence) -> None:
        with contextlib.suppress(ValueError):
            self.waiting.remove(sequence)
        if sequence.timeout is not None:
            self.pacer.cancel(sequence.timeout)
            sequence.timeout = None

    def _retire(self, sequence: Sequence) -> None:
        if sequence.state in (JOINING, RUNNING):
            self.used -= sequence.width
        sequence.state = FINISHED

    def _expire(self, sequence: Sequence) -> None:
        if sequence.state != WAITING:
            return
        sequence.timeout = None
        self._unqueue(sequence)
        sequence.state = FINISHED
        config = self.config
        status = config.timeout_status
        sequence.listener.failed(
            APIError(
                status,
                f"The request waited {config.queue_timeout:g} s in the queue for {self.model} "
                "and timed out. The server is overloaded; please retry.",
                type=SERVER_ERROR,
                code="queue_timeout",
                headers=((b"Retry-After", b"%d" % self._retry_after()),),
            )
        )

    def _refusal(self) -> APIError:
        config = self.config
        retry = self._retry_after()
        if config.reject_status == 429:
            return OverloadedError(
                429,
                f"The server is overloaded with requests for {self.model}: "
                f"{self.used} running and {len(self.waiting)} waiting. "
                f"Please retry after {retry}s.",
                type="requests",
                code="rate_limit_exceeded",
                headers=((b"Retry-After", b"%d" % retry),),
            )
        return OverloadedError(
            config.reject_status,
            f"The engine serving {self.model} is overloaded. Please retry after {retry}s.",
            type=SERVER_ERROR,
            code="overloaded",
            headers=((b"Retry-After", b"%d" % retry),),
        )

    def _retry_after(self) -> int:
        """Whole seconds until a place is likely to free up (at least 1)."""
        busy = self._batch + self.joining
        if not busy:
            return 1
        left = min(s.tokens - s.produced for s in busy)
        return max(1, math.ceil(left * self._decode_time(self.used, self.latency.itl.mean)))

    def _decode_time(self, batch: int, base: float | None = None) -> float:
        config = self.config
        if base is None:
            itl = self.latency.itl
            base = itl.a if itl.constant else float(itl.sample(self.rng, 1)[0])
        step = base * (1 + config.batch_slowdown * (max(batch, 1) - 1) / config.max_running)
        if config.max_tokens_per_s > 0:
            step = max(step, batch / config.max_tokens_per_s)
        return step

    def _start_step(self, after: float | None = None) -> None:
        """
        Decode the running sequences and prefill those that joined since.
        Back-to-back steps are timed from the previous step's scheduled end,
        not from when the reactor got round to it, so a late timer does not
        slow the simulated engine down.
        """
        running = sum(s.width for s in self.running)
        duration = self._decode_time(running) if running else 0.0
        if self.joining:
            # One batched forward pass prefills every newcomer: its fixed
            # cost is paid once, its per-token cost for all their prompts.
            latency = self.latency
            prompts = sum(s.prompt_tokens for s in self.joining)
            duration += latency.first_token(self.rng, 0) + latency.prefill_per_token * prompts
        self._batch = self.running + self.joining
        self.joining = []
        self.last_step = duration
        start = self.clock.seconds() if after is None else after
        self._step_end = start + duration
        self._step = self.pacer.at(self._step_end, self._end_step)

    def _end_step(self) -> None:
        self._step = None
        self.steps += 1
        members, self._batch = self._batch, []
        self.running = []
        # Listeners may cancel sequences (theirs or others) while we notify
        # them; the next step starts only once the batch is settled.
        self._ending = True
        try:
            for sequence in members:
                if sequence.state == FINISHED:
                    continue
                sequence.state = RUNNING
                sequence.produced += 1
                if sequence.produced >= sequence.tokens:
                    self._retire(sequence)
                else:
                    self.running.append(sequence)
                sequence.listener.advanced(sequence.produced)
            self.running = [s for s in self.running if s.state == RUNNING]
            self._admit_waiting()
        finally:
            self._ending = False
        if (self.running or self.joining) and self._step is None:
            self._start_step(after=self._step_end)
