"""The SSE producer and the delayed non-streaming body, on a fake clock."""

from __future__ import annotations

import functools
import gc
import json
import platform
import weakref
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai.render import Renderer
from mockoai.ops.config import Settings
from mockoai.pipeline.stream import StreamProducer, delayed
from mockoai.sim import corpus
from mockoai.sim.corpus import Corpus, unescape
from mockoai.sim.engine import Engine, EngineConfig
from mockoai.sim.latency import LatencyModel, constant
from mockoai.sim.pacing import Pacer
from mockoai.sim.request import GenerationRequest
from mockoai.sim.sampling import STOP, Plan, Planner

MODEL = "test/model-1"
FINGERPRINT = "fp_test"
CREATED = 1_700_000_123
PROMPT_TOKENS = 9
TTFT = 0.25
ITL = 1 / 16


@functools.cache
def small_corpus() -> Corpus:
    return corpus.build(articles=64)


@functools.cache
def renderer() -> Renderer:
    return Renderer(MODEL, FINGERPRINT, small_corpus())


class FakeRequest:
    """Just enough of IRequest for a producer; records every write with its time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.code = 200
        self.producer: Any = None
        self.streaming: bool | None = None
        self.registered = 0
        self.finished = False
        self._finishes: list[Deferred[None]] = []
        #: Called after every non-empty write (to simulate back-pressure).
        self.on_write: Any = None

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None, "producer registered twice"
        self.producer, self.streaming = producer, streaming
        self.registered += 1

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._finishes.append(d)
        return d

    def write(self, data: bytes) -> None:
        assert not self.finished, "write after finish"
        self.writes.append((self.clock.seconds(), bytes(data)))
        if data and self.on_write is not None:
            self.on_write()

    def finish(self) -> None:
        assert not self.finished, "finished twice"
        self.finished = True
        for d in self._finishes:
            d.callback(None)

    def disconnect(self) -> None:
        for d in self._finishes:
            d.errback(Failure(ConnectionDone("client went away")))
        self.producer = None  # as a transport forgets its producer on connectionLost

    # reading it back

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.writes)

    def events(self) -> list[tuple[float, str]]:
        """Every SSE ``data:`` payload with the time its write happened."""
        out = []
        for when, data in self.writes:
            if not data:
                continue
            assert data.endswith(b"\n\n"), data[-40:]
            for frame in data[:-2].split(b"\n\n"):
                assert frame.startswith(b"data: "), frame[:40]
                out.append((when, frame[6:].decode("utf-8")))
        return out

    def chunks(self) -> list[tuple[float, dict[str, Any]]]:
        events = self.events()
        assert events and events[-1][1] == "[DONE]", events[-1:]
        assert all(payload != "[DONE]" for _, payload in events[:-1])
        return [(when, json.loads(payload)) for when, payload in events[:-1]]


class BoundedClock(Clock):
    """A Clock that fails (rather than hangs) when timers are re-armed endlessly."""

    limit = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        self.scheduled += 1
        if self.scheduled > self.limit:
            raise AssertionError("timer re-armed endlessly (a spinning pacer?)")
        return super().callLater(delay, f, *args, **kw)


def advance_to(clock: Clock, when: float) -> None:
    clock.advance(max(0.0, when - clock.seconds()))
    if clock.seconds() < when:  # float rounding of seconds + (when - seconds)
        clock.rightNow = when
        clock.advance(0)


def run_all(clock: Clock, limit: int = 100_000) -> int:
    """Fire every timer in time order, stepping exactly to each one."""
    steps = 0
    while clock.getDelayedCalls():
        steps += 1
        if steps > limit:
            raise AssertionError("timers never settle")
        advance_to(clock, min(c.getTime() for c in clock.getDelayedCalls()))
    return steps


class Stream:
    """One streamed answer under test: settings, plan, producer, fake request."""

    def __init__(
        self,
        kind: str = "chat",
        start_at: float = 0.0,
        slack: float = 0.0,
        settings: dict[str, Any] | None = None,
        engine: EngineConfig | None = None,
        **fields: Any,
    ) -> None:
        values: dict[str, Any] = {
            "articles": 64,
            "tokens_mean": 24.0,
            "tokens_stddev": 0.0,
            "response_delay": TTFT,
            "itl": ITL,
        }
        values.update(settings or {})
        self.settings = Settings.from_values(**values)
        request_fields: dict[str, Any] = {
            "kind": kind,
            "model": MODEL,
            "prompt_tokens": PROMPT_TOKENS,
            "stream": True,
            "seed": 42,
        }
        request_fields.update(fields)
        self.request = GenerationRequest(**request_fields)
        self.plan: Plan = Planner(small_corpus(), self.settings).plan(self.request)
        self.clock = BoundedClock()
        self.clock.advance(start_at)
        self.t0 = start_at
        self.pacer = Pacer(self.clock, slack=slack)
        if kind == "chat":
            self.events = renderer().chat_stream(self.plan, "abc123", CREATED)
        else:
            self.events = renderer().completion_stream(self.plan, "abc123", CREATED)
        self.http = FakeRequest(self.clock)
        self.engine = None
        if engine is not None:
            latency = LatencyModel(constant(TTFT), constant(ITL))
            self.engine = Engine(self.pacer, latency, engine, model=MODEL)
        self.producer = StreamProducer(self.http, self.plan, self.events, self.pacer, self.engine)
        self.done: Deferred[None] | None = None

    def start(self) -> Deferred[None]:
        self.done = self.producer.start()
        return self.done

    def text(self, index: int = 0) -> str:
        choice = self.plan.choices[index]
        return unescape(small_corpus().data[choice.start : choice.end])

    def due(self, tokens: int) -> float:
        """When a choice's ``tokens``-th token is out (ttft for the first)."""
        return self.t0 + TTFT + (max(tokens, 1) - 1) * ITL


def disconnect_mid_stream(s: Stream) -> None:
    advance_to(s.clock, TTFT + 3 * ITL)
    s.http.disconnect()


class ChatStreamTests(SynchronousTestCase):
    def test_headers_at_once_first_token_at_ttft(self) -> None:
        s = Stream()
        s.start()
        self.assertEqual(s.http.writes, [(0.0, b"")])
        self.assertIs(s.http.producer, s.producer)
        self.assertTrue(s.http.streaming)
        advance_to(s.clock, TTFT - ITL / 2)
        self.assertEqual(len(s.http.writes), 1)
        advance_to(s.clock, TTFT)
        self.assertEqual(len(s.http.writes), 2)
        chunks = [json.loads(p) for _, p in s.http.events()]
        # The role chunk and the first content chunk go out together.
        self.assertEqual(
            [c["choices"][0]["delta"] for c in chunks],
            [
                {"role": "assistant", "content": "", "refusal": None},
                {"content": s.text()[: len(chunks[1]["choices"][0]["delta"]["content"])]},
            ],
        )
        self.assertTrue(chunks[1]["choices"][0]["delta"]["content"])
        self.assertEqual(s.http.writes[1][0], TTFT)

    def test_event_times(self) -> None:
        s = Stream(settings={"stream_tokens": (1, 3)}, include_usage=True)
        s.start()
        run_all(s.clock)
        choice = s.plan.choices[0]
        chunks = s.http.chunks()
        content = [
            (t, c) for t, c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
        ]
        self.assertEqual(len(content), len(choice.counts))
        self.assertGreater(len(content), 8)
        for (when, _), count in zip(content, choice.counts):
            self.assertEqual(when, s.due(count))
        # The role chunk with the first content, the finish with the last.
        self.assertEqual(chunks[0][0], s.due(choice.counts[0]))
        finish = [t for t, c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        self.assertEqual(finish, [s.due(choice.tokens)])
        # Usage and [DONE] right after the finish chunk, in the same write.
        self.assertEqual(s.http.writes[-1][0], s.due(choice.tokens))
        self.assertTrue(s.http.writes[-1][1].endswith(b"data: [DONE]\n\n"))
        self.assertEqual(s.clock.seconds(), s.plan.duration())

    def test_chunks(self) -> None:
        s = Stream(include_usage=True)
        done = s.start()
        run_all(s.clock)
        self.assertIsNone(self.successResultOf(done))
        self.assertTrue(s.http.finished)
        self.assertIsNone(s.http.producer)
        self.assertTrue(s.http.body.endswith(b"data: [DONE]\n\n"))
        chunks = [c for _, c in s.http.chunks()]
        for c in chunks:
            self.assertEqual(c["id"], "chatcmpl-abc123")
            self.assertEqual(c["object"], "chat.completion.chunk")
            self.assertEqual(c["created"], CREATED)
            self.assertEqual(c["model"], MODEL)
            self.assertEqual(c["system_fingerprint"], FINGERPRINT)
        *answer, usage = chunks
        first, *middle, last = answer
        self.assertEqual(
            first["choices"],
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        )
        for c in middle:
            self.assertEqual(len(c["choices"]), 1)
            self.assertEqual(c["choices"][0]["index"], 0)
            self.assertIsNone(c["choices"][0]["finish_reason"])
            self.assertEqual(set(c["choices"][0]["delta"]), {"content"})
        self.assertEqual(
            last["choices"],
            [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": STOP}],
        )
        for c in answer:
            self.assertIn("usage", c)
            self.assertIsNone(c["usage"])
        self.assertEqual(usage["choices"], [])
        tokens = s.plan.choices[0].tokens
        self.assertEqual(tokens, 24)
        self.assertEqual(usage["usage"]["prompt_tokens"], PROMPT_TOKENS)
        self.assertEqual(usage["usage"]["completion_tokens"], tokens)
        self.assertEqual(usage["usage"]["total_tokens"], PROMPT_TOKENS + tokens)
        text = "".join(c["choices"][0]["delta"]["content"] for c in middle)
        self.assertEqual(text, s.text())
        self.assertEqual(len(middle), tokens)

    def test_without_include_usage(self) -> None:
        s = Stream()
        s.start()
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        self.assertTrue(all("usage" not in c for c in chunks))
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], STOP)

    def test_length_finish(self) -> None:
        s = Stream(max_tokens=5, include_usage=True)
        s.start()
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "length")
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 5)

    def test_continuous_usage(self) -> None:
        s = Stream(settings={"stream_tokens": (2, 4)}, include_usage=True, continuous_usage=True)
        s.start()
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        choice = s.plan.choices[0]
        completion = [c["usage"]["completion_tokens"] for c in chunks]
        self.assertEqual(completion, sorted(completion))
        self.assertEqual(completion[0], 0)  # the role chunk
        self.assertEqual(completion[1 : 1 + len(choice.counts)], choice.counts)
        self.assertEqual(completion[-1], choice.tokens)
        self.assertEqual(completion[-2], choice.tokens)  # the finish chunk
        for c in chunks:
            usage = c["usage"]
            self.assertEqual(usage["prompt_tokens"], PROMPT_TOKENS)
            self.assertEqual(usage["total_tokens"], PROMPT_TOKENS + usage["completion_tokens"])
        self.assertEqual(chunks[-1]["choices"], [])

    def test_continuous_usage_without_include_usage(self) -> None:
        s = Stream(continuous_usage=True)
        s.start()
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        self.assertTrue(all(c["choices"] for c in chunks))  # no usage-only chunk
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], s.plan.choices[0].tokens)

    def test_obfuscation(self) -> None:
        s = Stream(include_usage=True)
        s.start()
        run_all(s.clock)
        for _, c in s.http.chunks():
            self.assertIsInstance(c["obfuscation"], str)
            self.assertTrue(c["obfuscation"])
        s = Stream(include_usage=True, include_obfuscation=False)
        s.start()
        run_all(s.clock)
        self.assertNotIn(b"obfuscation", s.http.body)
        self.assertGreater(len(s.http.chunks()), 10)

    def test_n_choices_interleave(self) -> None:
        s = Stream(
            n=3, settings={"tokens_stddev": 6.0, "stream_tokens": (1, 2)}, include_usage=True
        )
        s.start()
        run_all(s.clock)
        timed = s.http.chunks()
        times = [t for t, _ in timed]
        self.assertEqual(times, sorted(times))
        chunks = [c for _, c in timed]
        usage = chunks.pop()
        self.assertEqual(usage["usage"]["completion_tokens"], s.plan.completion_tokens)
        indices = [c["choices"][0]["index"] for c in chunks]
        self.assertEqual(set(indices), {0, 1, 2})
        switches = sum(1 for a, b in zip(indices, indices[1:]) if a != b)
        self.assertGreater(switches, 6)  # interleaved, not one choice after another
        for index in range(3):
            mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
            self.assertEqual(
                mine[0]["delta"], {"role": "assistant", "content": "", "refusal": None}
            )
            self.assertEqual(mine[-1]["delta"], {})
            self.assertEqual(mine[-1]["finish_reason"], s.plan.choices[index].finish_reason)
            self.assertTrue(all(m["finish_reason"] is None for m in mine[:-1]))
            text = "".join(m["delta"].get("content", "") for m in mine)
            self.assertEqual(text, s.text(index))
        self.assertEqual(len({s.text(i) for i in range(3)}), 3)

    def test_pause_and_resume(self) -> None:
        s = Stream(include_usage=True)
        s.start()
        advance_to(s.clock, TTFT)
        written = len(s.http.writes)
        s.producer.pauseProducing()
        advance_to(s.clock, TTFT + 10 * ITL)
        run_until = TTFT + 10 * ITL
        self.assertEqual(len(s.http.writes), written)
        self.assertEqual(s.clock.seconds(), run_until)
        s.producer.resumeProducing()
        # Everything overdue goes out at once, at resume time.
        self.assertEqual(len(s.http.writes), written + 1)
        when, data = s.http.writes[-1]
        self.assertEqual(when, run_until)
        self.assertEqual(data.count(b"data: "), 10)
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        self.assertEqual(text, s.text())
        self.assertTrue(s.http.finished)

    def test_pause_before_first_token(self) -> None:
        s = Stream()
        s.start()
        s.producer.pauseProducing()
        run_all(s.clock)
        self.assertEqual(s.http.writes, [(0.0, b"")])
        advance_to(s.clock, 100.0)
        s.producer.resumeProducing()
        self.assertTrue(s.http.finished)
        self.assertEqual({t for t, _ in s.http.writes[1:]}, {100.0})
        s.producer.resumeProducing()  # resuming a finished stream is harmless
        self.assertEqual(len(s.http.chunks()), 24 + 2)

    def check_stopped(self, s: Stream, done: Deferred[None]) -> None:
        self.assertIsNone(self.successResultOf(done))
        written = list(s.http.writes)
        self.assertEqual(len(s.pacer), 0)
        run_all(s.clock)
        self.assertEqual(s.clock.getDelayedCalls(), [])
        self.assertEqual(s.http.writes, written)
        self.assertFalse(s.http.finished)
        s.producer.resumeProducing()
        self.assertEqual(s.http.writes, written)

    def test_stop_producing(self) -> None:
        s = Stream()
        done = s.start()
        advance_to(s.clock, TTFT + 3 * ITL)
        self.assertNoResult(done)
        s.producer.stopProducing()
        self.check_stopped(s, done)
        s.producer.stopProducing()  # twice is harmless

    def test_disconnect(self) -> None:
        s = Stream()
        done = s.start()
        advance_to(s.clock, TTFT + 3 * ITL)
        s.http.disconnect()
        self.check_stopped(s, done)

    def test_disconnect_while_paused(self) -> None:
        s = Stream()
        done = s.start()
        advance_to(s.clock, TTFT)
        s.producer.pauseProducing()
        s.http.disconnect()
        self.check_stopped(s, done)

    def test_cancel_done(self) -> None:
        s = Stream()
        done = s.start()
        advance_to(s.clock, TTFT)
        done.cancel()
        self.check_stopped(s, done)

    def assertFreedWithoutTheCyclicGC(
        self, make: Callable[[], Stream], end: Callable[[Stream], object]
    ) -> None:
        # A cycle left behind by every stream makes the cyclic GC's gen-2
        # passes walk thousands of dead streams (stalling live ones ~150 ms).
        if platform.python_implementation() != "CPython":
            self.skipTest("refcounting frees objects at once on CPython only")
        gc.disable()
        self.addCleanup(gc.enable)
        s = make()
        done = s.start()
        end(s)
        run_all(s.clock)  # time passes: the pacer lets go of stale entries
        self.assertTrue(done.called)
        producer = weakref.ref(s.producer)
        plan = weakref.ref(s.plan)
        del s, done
        self.assertIsNone(producer())
        self.assertIsNone(plan())

    def test_finished_stream_freed_by_refcount(self) -> None:
        self.assertFreedWithoutTheCyclicGC(Stream, lambda s: run_all(s.clock))

    def test_stopped_stream_freed_by_refcount(self) -> None:
        self.assertFreedWithoutTheCyclicGC(Stream, disconnect_mid_stream)

    def test_engine_stream_freed_by_refcount(self) -> None:
        engines: list[Engine | None] = []

        def make() -> Stream:
            s = Stream(engine=EngineConfig(max_running=4))
            engines.append(s.engine)
            return s

        self.assertFreedWithoutTheCyclicGC(make, lambda s: run_all(s.clock))
        self.assertFreedWithoutTheCyclicGC(make, disconnect_mid_stream)
        self.assertEqual([engine.used for engine in engines if engine], [0, 0])

    def test_unpaced_stream_finishes_in_start(self) -> None:
        s = Stream(settings={"response_delay": 0, "itl": 0}, include_usage=True)
        done = s.start()
        self.assertIsNone(self.successResultOf(done))
        self.assertTrue(s.http.finished)
        self.assertIsNone(s.http.producer)
        self.assertEqual(s.clock.getDelayedCalls(), [])
        self.assertEqual(len(s.pacer), 0)
        self.assertEqual({t for t, _ in s.http.writes}, {0.0})
        chunks = [c for _, c in s.http.chunks()]
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 24)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        self.assertEqual(text, s.text())

    def test_unpaced_large_stream_writes_in_batches(self) -> None:
        s = Stream(settings={"response_delay": 0, "itl": 0}, n=4, max_tokens=400, ignore_eos=True)
        s.start()
        self.assertTrue(s.http.finished)
        self.assertGreater(len(s.http.writes), 4)
        chunks = [c for _, c in s.http.chunks()]
        for index in range(4):
            text = "".join(
                c["choices"][0]["delta"].get("content", "")
                for c in chunks
                if c["choices"][0]["index"] == index
            )
            self.assertEqual(text, s.text(index))

    def test_unpaced_stream_honours_back_pressure(self) -> None:
        s = Stream(settings={"response_delay": 0, "itl": 0}, n=4, max_tokens=400, ignore_eos=True)
        pauses = []

        def full() -> None:
            pauses.append(len(s.http.writes))
            s.producer.pauseProducing()

        s.http.on_write = full
        s.start()
        self.assertFalse(s.http.finished)
        rounds = 0
        while not s.http.finished:
            rounds += 1
            self.assertLess(rounds, 1000)
            before = len(s.http.writes)
            s.producer.resumeProducing()
            # One write per resume: the producer stops as soon as it is paused
            # (the last may add the small closing write: usage and [DONE]).
            expected = before + 1 if not s.http.finished else before + 2
            self.assertIn(len(s.http.writes), (before + 1, expected))
        self.assertGreater(rounds, 3)
        self.assertEqual(len(pauses), sum(1 for _, data in s.http.writes if data))
        chunks = [c for _, c in s.http.chunks()]
        self.assertEqual(len(chunks), 4 * (400 + 2))

    def test_stop_at_start_gives_empty_choice(self) -> None:
        full = Stream().text()
        s = Stream(stop=(full[:4],), include_usage=True)
        self.assertEqual(s.plan.choices[0].tokens, 0)
        s.start()
        run_all(s.clock)
        timed = s.http.chunks()
        chunks = [c for _, c in timed]
        self.assertEqual(len(chunks), 3)
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(chunks[1]["choices"][0]["finish_reason"], STOP)
        self.assertEqual(chunks[2]["usage"]["completion_tokens"], 0)
        # Even an empty answer waits for its first token.
        self.assertEqual({t for t, _ in timed}, {TTFT})

    def test_wall_clock_times_do_not_spin(self) -> None:
        # A real reactor's clock is seconds since the epoch, where
        # (t0 + due) - t0 != due in floats; with slack=0 the producer once
        # re-armed the same instant forever.
        s = Stream(start_at=1_700_000_000.1, settings={"response_delay": 0.1, "itl": 0.02})
        s.clock.limit = 1000
        s.start()
        steps = run_all(s.clock, limit=1000)
        self.assertTrue(s.http.finished)
        self.assertLessEqual(steps, 30)
        chunks = s.http.chunks()
        content = [t for t, c in chunks if c["choices"][0]["delta"].get("content")]
        self.assertEqual(len(content), 24)
        for i, when in enumerate(content):
            self.assertLess(abs(when - (s.t0 + 0.1 + i * 0.02)), 1e-6)


class TextStreamTests(SynchronousTestCase):
    def test_text_chunks(self) -> None:
        s = Stream(kind="completions", include_usage=True)
        s.start()
        run_all(s.clock)
        chunks = [c for _, c in s.http.chunks()]
        *answer, usage = chunks
        for c in chunks:
            self.assertEqual(c["id"], "cmpl-abc123")
            self.assertEqual(c["object"], "text_completion")
            self.assertEqual(c["created"], CREATED)
            self.assertEqual(c["model"], MODEL)
        # No echo: no opening chunk, the first chunk is text.
        self.assertTrue(answer[0]["choices"][0]["text"])
        for c in answer[:-1]:
            self.assertIsNone(c["choices"][0]["finish_reason"])
            self.assertEqual(c["choices"][0]["index"], 0)
            self.assertIsNone(c["choices"][0]["logprobs"])
        self.assertEqual(
            answer[-1]["choices"],
            [{"text": "", "index": 0, "logprobs": None, "finish_reason": STOP}],
        )
        self.assertEqual("".join(c["choices"][0]["text"] for c in answer), s.text())
        self.assertEqual(usage["choices"], [])
        self.assertEqual(
            usage["usage"],
            {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": 24,
                "total_tokens": PROMPT_TOKENS + 24,
            },
        )

    def test_first_text_at_ttft(self) -> None:
        s = Stream(kind="completions")
        s.start()
        self.assertEqual(s.http.writes, [(0.0, b"")])
        run_all(s.clock)
        times = [t for t, _ in s.http.chunks()]
        self.assertEqual(times[0], TTFT)
        self.assertEqual(times[-1], TTFT + 23 * ITL)

    def test_echo_comes_first(self) -> None:
        prompt = 'Say "this"\nplease'
        s = Stream(kind="completions", echo=(prompt,), max_tokens=6)
        s.start()
        run_all(s.clock)
        answer = [c["choices"][0] for _, c in s.http.chunks()]
        self.assertEqual(answer[0]["text"], prompt)
        self.assertIsNone(answer[0]["finish_reason"])
        self.assertEqual(answer[-1]["finish_reason"], "length")
        self.assertEqual("".join(a["text"] for a in answer), prompt + s.text())

    def test_echo_per_prompt(self) -> None:
        s = Stream(kind="completions", echo=("one", "two"), prompts=2, n=2)
        s.start()
        run_all(s.clock)
        chunks = [c["choices"][0] for _, c in s.http.chunks()]
        for index in range(4):
            mine = [c["text"] for c in chunks if c["index"] == index]
            self.assertEqual(mine[0], ("one", "two")[index // 2])
            self.assertEqual("".join(mine[1:]), s.text(index))


class BodyTests(SynchronousTestCase):
    """A body of one plain choice is made on a path of its own: the bytes any body has."""

    @settings(max_examples=100, deadline=None)
    @given(
        st.text(min_size=1, max_size=12),
        st.text(max_size=8),
        st.integers(0, 2**32),
        st.sampled_from(["none", "hidden"]),
        st.none() | st.integers(1, 300),
        st.sampled_from([(), ("lorem",), ("a",)]),
        st.integers(0, 10**6),
        st.integers(0, 2**40),
    )
    def test_plain_body_is_the_general_one(
        self,
        model: str,
        fingerprint: str,
        seed: int,
        reasoning: str,
        max_tokens: int | None,
        stop: tuple[str, ...],
        prompt_tokens: int,
        created: int,
    ) -> None:
        # Model ids and fingerprints with their own % signs, quotes, escapes.
        render = Renderer(f"%{model}%d", f"{fingerprint}%s", small_corpus())
        values = Settings.from_values(articles=64, reasoning=reasoning)
        planner = Planner(small_corpus(), values, seed=seed)
        for kind in ("chat", "completions"):
            wanted = GenerationRequest(
                kind=kind,
                model="m",
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                stop=stop,
            )
            plan = planner.plan(wanted)
            self.assertIsNone(plan.choices[0].segments)
            if kind == "chat":
                body = render.chat_body(plan, "abc%d", created)
                self.assertEqual(body, render._chat_body(plan, "abc%d", created, False))
                self.assertEqual(body, render.chat_body(plan, "abc%d", created, legacy=True))
            else:
                body = render.completion_body(plan, "abc%d", created)
                self.assertEqual(body, render._completion_body(plan, "abc%d", created))
            answer = json.loads(body)
            self.assertEqual(
                (answer["model"], answer["created"], answer["usage"]["completion_tokens"]),
                (f"%{model}%d", created, plan.completion_tokens),
            )
            if kind == "chat":
                self.assertEqual(answer["system_fingerprint"], f"{fingerprint}%s")
                details = answer["usage"]["completion_tokens_details"]
                self.assertEqual(details["reasoning_tokens"], plan.reasoning_tokens)


class DelayedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pacer = Pacer(self.clock, slack=0)
        self.renders: list[float] = []

    def render(self) -> bytes:
        self.renders.append(self.clock.seconds())
        return b'{"ok":true}'

    def test_no_delay_is_immediate(self) -> None:
        self.assertEqual(delayed(self.pacer, 0, self.render), b'{"ok":true}')
        self.assertEqual(delayed(self.pacer, -1, self.render), b'{"ok":true}')
        self.assertEqual(self.renders, [0.0, 0.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fires_at_exactly_the_delay(self) -> None:
        d = delayed(self.pacer, 1.5, self.render)
        assert isinstance(d, Deferred)
        self.assertNoResult(d)
        advance_to(self.clock, 1.25)
        self.assertNoResult(d)
        self.assertEqual(self.renders, [])  # rendered when released, not before
        advance_to(self.clock, 1.5)
        self.assertEqual(self.successResultOf(d), b'{"ok":true}')
        self.assertEqual(self.renders, [1.5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_many_share_one_timer(self) -> None:
        ds = [delayed(self.pacer, 1 + i / 8, self.render) for i in range(10)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        run_all(self.clock)
        self.assertEqual(self.renders, [1 + i / 8 for i in range(10)])
        for d in ds:
            assert isinstance(d, Deferred)
            self.successResultOf(d)

    def test_cancel(self) -> None:
        d = delayed(self.pacer, 2.0, self.render)
        assert isinstance(d, Deferred)
        other = delayed(self.pacer, 3.0, self.render)
        self.clock.advance(1.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.pacer), 1)
        run_all(self.clock)
        self.assertEqual(self.renders, [3.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        assert isinstance(other, Deferred)
        self.successResultOf(other)

    def test_cancel_only_waiter_leaves_no_timer(self) -> None:
        d = delayed(self.pacer, 2.0, self.render)
        assert isinstance(d, Deferred)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.pacer), 0)
        run_all(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.renders, [])
