"""The Planner: lengths, finish reasons, stop strings, seeds and stream partitions."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai import validate
from mockoai.ops.config import Settings
from mockoai.pipeline import errors
from mockoai.sim import corpus, latency
from mockoai.sim.corpus import ARTICLE_LEAD, Corpus, unescape
from mockoai.sim.request import GenerationRequest
from mockoai.sim.sampling import LENGTH, STOP, ChoicePlan, Draws, Plan, Planner, escape
from mockoai.sim.tokens import TOKEN, count_text
from tests.optional import needs_scipy, stats


@functools.cache
def small_corpus() -> Corpus:
    return corpus.build(articles=64)


def planner(seed: int | None = 1, **overrides: Any) -> Planner:
    values: dict[str, Any] = {"articles": 64, "tokens_mean": 100.0, "tokens_stddev": 30.0}
    values.update(overrides)
    return Planner(small_corpus(), Settings.from_values(**values), seed=seed)


def request(**fields: Any) -> GenerationRequest:
    values: dict[str, Any] = {"kind": "chat", "model": "m", "prompt_tokens": 9}
    values.update(fields)
    return GenerationRequest(**values)


def text_of(choice: ChoicePlan) -> str:
    return unescape(small_corpus().data[choice.start : choice.end])


def shape(plan: Plan) -> list[tuple[int, str, int, int]]:
    return [(c.tokens, c.finish_reason, c.start, c.end) for c in plan.choices]


class LengthTests(SynchronousTestCase):
    def test_lengths_clipped_and_finish_reason(self) -> None:
        p = planner(tokens_mean=50, tokens_stddev=100)
        reasons = set()
        for _ in range(300):
            choice = p.plan(request(max_tokens=60)).choices[0]
            self.assertGreaterEqual(choice.tokens, 1)
            self.assertLessEqual(choice.tokens, 60)
            self.assertEqual(choice.finish_reason, LENGTH if choice.tokens == 60 else STOP)
            reasons.add(choice.finish_reason)
        self.assertEqual(reasons, {LENGTH, STOP})

    def test_lengths_clipped_to_max_output_tokens(self) -> None:
        p = planner(tokens_mean=300, tokens_stddev=200, max_output_tokens=320)
        tokens = [p.plan(request()).choices[0].tokens for _ in range(300)]
        self.assertEqual(max(tokens), 320)
        self.assertGreaterEqual(min(tokens), 1)

    def test_answer_text_has_exactly_its_tokens(self) -> None:
        p = planner()
        data = small_corpus().data
        for _ in range(50):
            plan = p.plan(request(n=2))
            for choice in plan.choices:
                text = text_of(choice)
                self.assertEqual(count_text(text), choice.tokens)
                # Starts at an article, without its paragraph break.
                self.assertEqual(
                    data[choice.start - len(ARTICLE_LEAD) : choice.start], ARTICLE_LEAD
                )
                self.assertRegex(text, r"^[A-Z]")
                self.assertEqual(
                    choice.end, int(small_corpus().offsets[choice.first + choice.tokens])
                )

    def test_too_many_max_tokens(self) -> None:
        p = planner(max_output_tokens=4096)
        with self.assertRaises(errors.APIError) as caught:
            p.plan(request(max_tokens=5000))
        e = caught.exception
        self.assertEqual(
            (e.status, e.param, e.code, e.message),
            (
                400,
                "max_tokens",
                "invalid_value",
                "max_tokens is too large: 5000. This model supports at most 4096 completion "
                "tokens, whereas you provided 5000.",
            ),
        )
        with self.assertRaises(errors.APIError) as caught:
            p.plan(request(max_tokens=4097, max_tokens_param="max_completion_tokens"))
        self.assertEqual(caught.exception.param, "max_completion_tokens")
        self.assertTrue(caught.exception.message.startswith("max_completion_tokens is too large"))
        # Exactly the cap is fine.
        self.assertEqual(p.plan(request(max_tokens=4096, ignore_eos=True)).choices[0].tokens, 4096)

    def test_limit(self) -> None:
        p = planner(max_output_tokens=500)
        self.assertEqual(p.limit(request()), 500)
        self.assertEqual(p.limit(request(max_tokens=20)), 20)

    def test_min_tokens_over_the_limit(self) -> None:
        # Without max_tokens, min_tokens is bounded by the output limit, as vLLM bounds it.
        p = planner(max_output_tokens=500)
        self.assertEqual(p.limit(request(min_tokens=500)), 500)
        with self.assertRaises(errors.APIError) as caught:
            p.plan(request(min_tokens=501))
        error = caught.exception
        self.assertEqual(
            (error.status, error.param, error.code), (400, "min_tokens", "invalid_value")
        )
        self.assertEqual(
            error.message, "min_tokens must be less than or equal to max_tokens=500, got 501."
        )

    def test_ignore_eos(self) -> None:
        p = planner(max_output_tokens=700)
        for max_tokens, expected in [(None, 700), (1, 1), (333, 333)]:
            plan = p.plan(request(ignore_eos=True, max_tokens=max_tokens, n=3))
            for choice in plan.choices:
                self.assertEqual(choice.tokens, expected)
                self.assertEqual(choice.finish_reason, LENGTH)
                self.assertEqual(count_text(text_of(choice)), expected)

    def test_min_tokens_raises_short_answers(self) -> None:
        p = planner(tokens_mean=5, tokens_stddev=0)
        self.assertEqual(p.plan(request()).choices[0].tokens, 5)
        choice = p.plan(request(min_tokens=50)).choices[0]
        self.assertEqual((choice.tokens, choice.finish_reason), (50, STOP))
        # min_tokens never pushes past the limit.
        choice = p.plan(request(min_tokens=50, max_tokens=50)).choices[0]
        self.assertEqual((choice.tokens, choice.finish_reason), (50, LENGTH))
        # Longer natural answers are untouched.
        p = planner(tokens_mean=80, tokens_stddev=0)
        self.assertEqual(p.plan(request(min_tokens=50)).choices[0].tokens, 80)

    def test_zero_stddev(self) -> None:
        p = planner(tokens_mean=42, tokens_stddev=0)
        self.assertEqual({p.plan(request()).choices[0].tokens for _ in range(20)}, {42})

    def test_n_choices_from_distinct_articles(self) -> None:
        p = planner()
        for _ in range(30):
            plan = p.plan(request(n=3))
            self.assertEqual([c.index for c in plan.choices], [0, 1, 2])
            self.assertEqual(len({c.first for c in plan.choices}), 3)
            texts = [text_of(c) for c in plan.choices]
            self.assertEqual(len({t[:40] for t in texts}), 3)

    def test_prompts_times_n_choices(self) -> None:
        plan = planner().plan(request(kind="completions", n=2, prompts=3))
        self.assertEqual([c.index for c in plan.choices], list(range(6)))

    def test_plan_fields(self) -> None:
        p = planner(response_delay=0.5, itl=0.01)
        req = request(n=2)
        plan = p.plan(req)
        self.assertIs(plan.wanted, req)
        self.assertEqual(plan.ttft, 0.5)
        self.assertEqual(plan.prompt_tokens, 9)
        self.assertEqual(plan.completion_tokens, sum(c.tokens for c in plan.choices))
        self.assertEqual(plan.tokens, max(c.tokens for c in plan.choices))

    def test_duration(self) -> None:
        p = planner(response_delay=0.25, itl=0.125, tokens_mean=10, tokens_stddev=0)
        plan = p.plan(request(n=2))
        self.assertEqual(plan.duration(), 0.25 + 9 * 0.125)
        plan.choices[1].tokens = 17
        self.assertEqual(plan.duration(), 0.25 + 16 * 0.125)
        plan.choices[0].tokens = plan.choices[1].tokens = 0
        self.assertEqual(plan.duration(), 0.25)
        self.assertEqual(attrs.evolve(plan, choices=[]).duration(), 0.25)


class DrawsTests(SynchronousTestCase):
    @settings(max_examples=50, deadline=None)
    @given(st.integers(0, 2**32), st.integers(1, 9), st.lists(st.integers(0, 2), max_size=40))
    def test_numpy_numbers_in_turn(self, seed: int, block: int, kinds: list[int]) -> None:
        # Each block is numpy's, handed out from its end: a seed's answers never change.
        draws, rng = Draws(np.random.default_rng(seed), block), np.random.default_rng(seed)
        normals: list[float] = []
        uniforms: list[float] = []
        for kind in kinds:
            if kind == 0:
                normals = normals or rng.standard_normal(block).tolist()
                self.assertEqual(draws.normal(), normals.pop())
                continue
            uniforms = uniforms or rng.random(block).tolist()
            if kind == 1:
                self.assertEqual(draws.uniform(), uniforms.pop())
            else:
                self.assertEqual(draws.below(7), int(uniforms.pop() * 7))


class SeedTests(SynchronousTestCase):
    def test_same_seed_same_plan(self) -> None:
        # Different planners, different global state: the seed alone decides.
        one = planner(seed=1, stream_tokens=(1, 4)).plan(request(seed=1234, n=3))
        other = planner(seed=99, stream_tokens=(1, 4))
        other.plan(request())
        two = other.plan(request(seed=1234, n=3))
        self.assertEqual(shape(one), shape(two))
        for a, b in zip(one.choices, two.choices):
            self.assertEqual((a.bounds, a.counts), (b.bounds, b.counts))

    def test_different_seeds_differ(self) -> None:
        p = planner()
        plans = {tuple(shape(p.plan(request(seed=seed, n=2)))) for seed in range(10)}
        self.assertEqual(len(plans), 10)

    def test_negative_and_large_seeds(self) -> None:
        # OpenAI's seed is any int64; numpy's generators take only non-negative seeds.
        p = planner()
        for seed in [-1, -(2**63), 2**63 - 1, 2**70]:
            self.assertEqual(shape(p.plan(request(seed=seed))), shape(p.plan(request(seed=seed))))
        self.assertNotEqual(
            shape(p.plan(request(seed=-1, n=3))), shape(p.plan(request(seed=1, n=3)))
        )

    def test_unseeded_plans_vary(self) -> None:
        p = planner(seed=None)
        self.assertGreater(len({tuple(shape(p.plan(request()))) for _ in range(10)}), 1)

    def test_planner_seed_reproduces_unseeded_sequence(self) -> None:
        a, b = planner(seed=5), planner(seed=5)
        self.assertEqual(
            [shape(a.plan(request(n=2))) for _ in range(5)],
            [shape(b.plan(request(n=2))) for _ in range(5)],
        )


#: Latencies with nothing to draw (the default), with a prefill cost, and drawn.
LATENCIES: list[dict[str, Any]] = [
    {},
    {"response_delay": 0.25, "itl": 0.125},
    {"response_delay": 0.1, "prefill_per_token": 0.001},
    {"response_delay": latency.parse("normal:200:20"), "itl": latency.parse("lognormal:20:8")},
    {"itl": latency.parse("uniform:10:30")},
]


def general(p: Planner, wanted: GenerationRequest) -> Plan:
    """The plan of ``wanted`` as the code for any request makes it (unseeded)."""
    profile = p.settings.profile()
    return p._general(wanted, profile, p.limit(wanted), p._draws, False)


def everything(plan: Plan) -> list[object]:
    """What a reader of ``plan`` may see of it, stream events included."""
    timing = plan.timing
    seen: list[object] = [
        plan.wanted,
        plan.tokens,
        plan.completion_tokens,
        plan.reasoning_tokens,
        plan.prompt_tokens,
        (timing.ttft, timing.itl, timing.table),
        plan.duration(),
    ]
    for c in plan.choices:
        seen += (c.index, c.tokens, c.finish_reason, c.start, c.end, c.first, c.hidden)
        seen += (c.segments, c.reasoning_tokens, c.profile, c.bounds, c.counts, c.spans)
    return seen


class PlainTests(SynchronousTestCase):
    """One choice of plain text is planned by a path of its own: the same plan as any."""

    @settings(max_examples=150, deadline=None)
    @given(
        st.integers(0, 2**32),
        st.sampled_from(LATENCIES),
        st.tuples(st.integers(1, 300), st.integers(0, 120), st.integers(16, 600)),
        st.sampled_from([(1, 1), (1, 4), (3, 3)]),
        st.lists(
            st.tuples(st.none() | st.integers(1, 700), st.integers(0, 16), st.booleans()),
            min_size=1,
            max_size=4,
        ),
    )
    def test_plain_path_plans_as_the_general_one(
        self,
        seed: int,
        latencies: dict[str, Any],
        lengths: tuple[int, int, int],
        stream_tokens: tuple[int, int],
        requests: list[tuple[int | None, int, bool]],
    ) -> None:
        mean, stddev, cap = lengths
        values = dict(
            latencies,
            tokens_mean=mean,
            tokens_stddev=stddev,
            max_output_tokens=cap,
            stream_tokens=stream_tokens,
        )
        fast, slow = planner(seed, **values), planner(seed, **values)
        self.patch(fast, "_general", lambda *args: self.fail("not the plain path"))
        # A run of requests: the draws stay in step from one to the next.
        for max_tokens, min_tokens, ignore_eos in requests:
            if max_tokens is not None and max_tokens > cap:
                max_tokens = cap
            wanted = request(max_tokens=max_tokens, min_tokens=min_tokens, ignore_eos=ignore_eos)
            self.assertEqual(everything(fast.plan(wanted)), everything(general(slow, wanted)))
        self.assertEqual(fast._draws.uniform(), slow._draws.uniform())
        self.assertEqual(fast._draws.rng.random(), slow._draws.rng.random())

    def test_other_requests_take_the_general_path(self) -> None:
        p = planner()
        taken: list[GenerationRequest] = []
        real = p._general

        def spy(wanted: GenerationRequest, *args: Any) -> Plan:
            taken.append(wanted)
            return real(wanted, *args)

        self.patch(p, "_general", spy)
        others = [
            request(n=2),
            request(kind="completions", prompts=2),
            request(stop=("lorem",)),
            request(reasoning_budget=64),
            request(guided_choice=("yes", "no")),
        ]
        for wanted in [request(), *others, request(seed=5)]:
            p.plan(wanted)
        self.assertEqual(taken, others)
        p = planner(reasoning="hidden")
        self.patch(p, "_general", spy)
        p.plan(request())
        self.assertEqual(len(taken), len(others) + 1)


def sent_tokens(full: str, cut: int) -> int:
    """Tokens of ``full`` whose text starts before ``cut`` (so was at least partly sent)."""
    return sum(1 for m in TOKEN.finditer(full) if m.start() < cut)


class StopTests(SynchronousTestCase):
    LIMIT = 400

    def full(self, seed: int = 7) -> tuple[Planner, ChoicePlan]:
        p = planner()
        return p, p.plan(request(seed=seed, ignore_eos=True, max_tokens=self.LIMIT)).choices[0]

    def stopped(self, p: Planner, stop: tuple[str, ...], seed: int = 7) -> ChoicePlan:
        plan = p.plan(request(seed=seed, ignore_eos=True, max_tokens=self.LIMIT, stop=stop))
        return plan.choices[0]

    def check_cut(self, stop: tuple[str, ...], seed: int = 7) -> ChoicePlan:
        p, full = self.full(seed)
        text = text_of(full)
        choice = self.stopped(p, stop, seed)
        found = [text.find(s) for s in stop if s in text]
        self.assertEqual(choice.start, full.start)
        if not found:
            self.assertEqual(shape_of(choice), shape_of(full))
            return choice
        cut = min(found)
        self.assertEqual(text_of(choice), text[:cut])
        self.assertEqual(choice.finish_reason, STOP)
        self.assertEqual(choice.tokens, sent_tokens(text, cut))
        for s in stop:
            self.assertNotIn(s, text_of(choice))
        return choice

    def test_stop_in_the_middle(self) -> None:
        _, full = self.full()
        text = text_of(full)
        word = text.split(" ")[20]
        choice = self.check_cut((word,))
        self.assertLess(choice.tokens, self.LIMIT)
        self.assertGreater(choice.tokens, 10)

    def test_stop_inside_a_token_counts_that_token(self) -> None:
        _, full = self.full()
        text = text_of(full)
        tokens = [m.group() for m in TOKEN.finditer(text)]
        # A stop starting in the middle of token 10: tokens 0..10 were (partly) sent.
        prefix = "".join(tokens[:10])
        word = tokens[10]
        stop = word[2:] + tokens[11]
        if text.find(stop) == len(prefix) + 2:
            choice = self.check_cut((stop,))
            self.assertEqual(choice.tokens, 11)
        # A stop starting exactly at token 10 (its leading space): 10 tokens sent.
        stop = tokens[10] + tokens[11]
        self.assertEqual(text.find(stop), len(prefix))
        choice = self.check_cut((stop,))
        self.assertEqual(choice.tokens, 10)
        self.assertEqual(text_of(choice), prefix)

    def test_stop_at_the_very_start(self) -> None:
        _, full = self.full()
        text = text_of(full)
        choice = self.check_cut((text[:3],))
        self.assertEqual((choice.tokens, choice.finish_reason), (0, STOP))
        self.assertEqual(choice.start, choice.end)
        self.assertEqual(text_of(choice), "")
        self.assertEqual((choice.bounds, choice.counts), ([choice.start], []))

    def test_stop_not_found(self) -> None:
        p, full = self.full()
        choice = self.stopped(p, ("zzz", "Lorem ipsum dolor sit amet, zzz"))
        self.assertEqual(shape_of(choice), shape_of(full))
        self.assertEqual(choice.finish_reason, LENGTH)

    def test_earliest_of_several_stops(self) -> None:
        _, full = self.full()
        text = text_of(full)
        words = text.split(" ")
        late, early = words[30], words[8]
        choice = self.check_cut((late, early, "zzz"))
        self.assertEqual(text_of(choice), text[: text.find(early)])

    def test_stop_beyond_the_answer_is_no_match(self) -> None:
        # A stop string that only matches across the end of the answer (its
        # start inside, its end in the text that follows) does not count.
        p, full = self.full()
        text = text_of(full)
        after = unescape(small_corpus().data[full.end : full.end + 200])
        for stop in (text[-12:] + after[:10], after[:30]):
            self.assertNotIn(stop, text)
            self.assertEqual(shape_of(self.stopped(p, (stop,))), shape_of(full))

    def test_stop_newline_matches_paragraph_break(self) -> None:
        _, full = self.full()
        text = text_of(full)
        self.assertIn("\n\n", text)
        for stop in ("\n", "\n\n", ".\n"):
            choice = self.check_cut((stop,))
            self.assertEqual(text_of(choice), text[: text.index(stop)])

    def test_n_does_not_match_inside_escaped_newline(self) -> None:
        _, full = self.full()
        text = text_of(full)
        brk = text.index("\n\n")
        # "nW" exists in the escaped bytes (the n of "\n" then the word) but not
        # in the decoded text.
        stop = "n" + text[brk + 2 : brk + 4]
        self.assertIn(escape(stop), small_corpus().data[full.start : full.end])
        self.assertNotIn(stop, text)
        choice = self.check_cut((stop,))
        self.assertEqual(choice.finish_reason, LENGTH)
        self.assertEqual(choice.tokens, self.LIMIT)
        # And the bare letter n stops at the first real n, not at an escape.
        self.check_cut(("n",))
        self.check_cut(("n", "\n"))

    def test_stop_cut_stream_partition(self) -> None:
        _, full = self.full()
        text = text_of(full)
        word = text.split(" ")[25]
        choice = self.check_cut((word[:-1],))
        self.assertEqual(choice.counts[-1], choice.tokens)
        self.assertEqual(choice.bounds[-1], choice.end)
        data = small_corpus().data
        self.assertEqual(
            b"".join(data[a:b] for a, b in zip(choice.bounds, choice.bounds[1:])),
            data[choice.start : choice.end],
        )

    @settings(max_examples=150, deadline=None)
    @given(st.integers(0, 2**32), st.data())
    def test_any_substring_as_stop(self, seed: int, data: st.DataObject) -> None:
        _, full = self.full(seed)
        text = text_of(full)
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i + 1, min(len(text), i + 12)))
        stop = text[i:j]
        choice = self.check_cut((stop,), seed)
        self.assertEqual(text_of(choice), text[: text.find(stop)])

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 2**32), st.text(alphabet="nN\n ,.abcdeilmoprstu", min_size=1, max_size=4))
    def test_any_short_stop(self, seed: int, stop: str) -> None:
        self.check_cut((stop,), seed)


def shape_of(choice: ChoicePlan) -> tuple[int, str, int, int]:
    return (choice.tokens, choice.finish_reason, choice.start, choice.end)


class PartitionTests(SynchronousTestCase):
    def check(self, choice: ChoicePlan, low: int, high: int) -> None:
        data = small_corpus().data
        counts, bounds = choice.counts, choice.bounds
        self.assertEqual(counts[-1], choice.tokens)
        self.assertEqual(len(bounds), len(counts) + 1)
        self.assertEqual((bounds[0], bounds[-1]), (choice.start, choice.end))
        steps = np.diff([0, *counts])
        self.assertTrue(np.all(steps >= 1))
        self.assertTrue(np.all((steps[:-1] >= low) & (steps[:-1] <= high)), steps)
        self.assertLessEqual(steps[-1], high)
        self.assertTrue(np.all(np.diff(bounds) > 0))
        self.assertEqual(
            b"".join(data[a:b] for a, b in zip(bounds, bounds[1:])),
            data[choice.start : choice.end],
        )
        # Each event holds exactly its share of tokens.
        for i in range(len(counts)):
            piece = unescape(data[bounds[i] : bounds[i + 1]])
            self.assertEqual(count_text(piece), steps[i])

    def test_one_token_per_event(self) -> None:
        choice = planner().plan(request(seed=3)).choices[0]
        self.check(choice, 1, 1)
        self.assertEqual(choice.counts, list(range(1, choice.tokens + 1)))

    def test_fixed_size_events(self) -> None:
        p = planner(stream_tokens=(3, 3), tokens_mean=100, tokens_stddev=0)
        choice = p.plan(request()).choices[0]
        self.check(choice, 3, 3)
        self.assertEqual(choice.counts, [*range(3, 100, 3), 100])

    def test_ranged_events(self) -> None:
        p = planner(stream_tokens=(2, 5))
        sizes = set()
        for _ in range(30):
            for choice in p.plan(request(n=2)).choices:
                self.check(choice, 2, 5)
                sizes.update(np.diff([0, *choice.counts[:-1]]).tolist())
        self.assertEqual(sizes, {2, 3, 4, 5})

    def test_single_token_answer(self) -> None:
        p = planner(stream_tokens=(4, 8))
        choice = p.plan(request(max_tokens=1)).choices[0]
        self.assertEqual(choice.counts, [1])
        self.assertEqual(choice.bounds, [choice.start, choice.end])

    @settings(max_examples=100, deadline=None)
    @given(st.integers(1, 16), st.integers(0, 16), st.integers(1, 300), st.integers(0, 2**32))
    def test_partition_property(self, low: int, extra: int, tokens: int, seed: int) -> None:
        high = low + extra
        p = planner(stream_tokens=(low, high), max_output_tokens=300)
        choice = p.plan(request(seed=seed, ignore_eos=True, max_tokens=tokens)).choices[0]
        self.assertEqual(choice.tokens, tokens)
        self.check(choice, low, high)


class PlanningProperties(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        st.fixed_dictionaries(
            {"model": st.just("m"), "messages": st.just([{"role": "user", "content": "hi"}])},
            optional={
                "n": st.integers(1, 128),
                "max_tokens": st.integers(1, 6000),
                "min_tokens": st.integers(0, 6000),
                "seed": st.integers(-(2**63), 2**64),
                "ignore_eos": st.booleans(),
                "stop": st.lists(st.text(max_size=3), max_size=4),
            },
        )
    )
    def test_valid_requests_plan_or_raise_400(self, body: dict[str, Any]) -> None:
        try:
            req = validate.chat(body)
        except errors.APIError:
            assume(False)
            raise
        p = planner(max_output_tokens=4096)
        try:
            plan = p.plan(req)
        except errors.APIError as e:
            self.assertEqual(e.status, 400)
            # max_tokens over the output limit, or min_tokens when max_tokens is unset.
            self.assertGreater(req.max_tokens or req.min_tokens, 4096)
            return
        self.assertEqual(len(plan.choices), req.n)
        limit = p.limit(req)
        for choice in plan.choices:
            self.assertTrue(0 <= choice.tokens <= limit)
            self.assertLessEqual(choice.start, choice.end)
            self.assertEqual(choice.counts[-1] if choice.counts else 0, choice.tokens)


class DistributionTests(SynchronousTestCase):
    def lengths(self) -> np.ndarray:
        p = planner(seed=20240601, tokens_mean=200, tokens_stddev=40, max_output_tokens=4096)
        req = request()
        return np.array([p.plan(req).choices[0].tokens for _ in range(10_000)], dtype=float)

    @needs_scipy
    def test_lengths_are_rounded_normal(self) -> None:
        lengths = self.lengths()
        self.assertTrue(np.all(lengths == np.round(lengths)))
        self.assertLess(abs(lengths.mean() - 200), 2)
        self.assertLess(abs(lengths.std() - 40), 2)
        # Undo the rounding with uniform jitter: round(Z) + U(-1/2, 1/2) has a
        # CDF within ~1e-5 of Z's, far below what 10,000 samples can see.
        jitter = np.random.default_rng(1).uniform(-0.5, 0.5, lengths.size)
        result = stats.kstest(lengths + jitter, stats.norm(200, 40).cdf)
        self.assertGreater(result.pvalue, 0.001)
        # The test has power: a slightly different distribution is rejected.
        for mean, sd in [(204, 40), (200, 44)]:
            wrong = stats.kstest(lengths + jitter, stats.norm(mean, sd).cdf)
            self.assertLess(wrong.pvalue, 0.001, (mean, sd))
