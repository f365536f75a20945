"""
Tool calls, structured outputs and reasoning in OpenRouter mode (``/api/v1``).

The requests go through OpenAI's checks (L{mockoai.dialects.openai.shapes}),
so only OpenRouter's shapes are tested here: ``native_finish_reason`` beside
``tool_calls``, an ``index`` in the message's calls, the reasoning text in
``reasoning`` and ``reasoning_details`` (plain and in deltas), what its
``reasoning`` parameter asks of the planner, and the generation records.
Bodies and chunks are validated against OpenAI's schemas where OpenRouter's
shape is a superset of them; the ``openai`` SDK pointed at ``/api/v1``
assembles the calls and reads ``reasoning`` from ``model_extra``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import jsonschema
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import ModelSpec
from mockoai.sim import tokens
from mockoai.testing import MockoaiServer
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import sse_json, validate_event
from tests.test_openrouter import GPT, KEY, MODELS, RouterTestCase, chat, completion
from tests.test_tools import PERSON, TIME, WEATHER, schema_of

CHUNK = "CreateChatCompletionStreamResponse"
BODY = "CreateChatCompletionResponse"
#: A reasoning model whose provider keeps the reasoning to itself (OpenAI's o-series).
THINKER = "openai/o4-mini"
#: A reasoning model whose provider sends it (DeepSeek R1 and the like).
TALKER = "deepseek/deepseek-r1"
#: Breaks every stream once 6 tokens are out.
FLAKY = "acme/flaky"
REASONING_MODELS = (
    *MODELS,
    ModelSpec(
        FLAKY, "acme", completion_price=1e-6, stream_error_rate=1.0, stream_error_after=6
    ),
    ModelSpec(
        THINKER, "openai", prompt_price=1.1e-6, completion_price=4.4e-6,
        overrides=(("reasoning", "hidden"),),
    ),
    ModelSpec(
        TALKER, "deepseek", prompt_price=4e-7, completion_price=2e-6,
        overrides=(("reasoning", "visible"),),
    ),
)  # fmt: skip
TOOLS = {"get_weather": WEATHER, "get_time": TIME}
CALL_ID = r"^call_[A-Za-z0-9]{24}$"


def reasoning_of(message: dict[str, Any]) -> str | None:
    """``message.reasoning``, checked against its one ``reasoning.text`` detail."""
    text = message["reasoning"]
    details = message.get("reasoning_details")
    if text is None:
        assert details is None, details
        return None
    assert details == [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]
    return str(text)


class OpenRouterShapeCase(RouterTestCase):
    """The OpenRouter service of L{tests.test_openrouter}, with two reasoning models."""

    settings: ClassVar[dict[str, Any]] = {"models": REASONING_MODELS, "tokens_mean": 20.0}

    def chunks_of(self, chunks: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
        """The choice ``index`` of every chunk (the usage chunk has none)."""
        return [c for chunk in chunks for c in chunk["choices"] if c["index"] == index]


class ToolCallTests(OpenRouterShapeCase):
    def test_plain(self) -> None:
        body = self.answer(chat(tools=[WEATHER, TIME], seed=3))
        validate(BODY, body)
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        self.assertEqual(choice["native_finish_reason"], "tool_calls")
        message = choice["message"]
        self.assertIsNone(message["content"])
        self.assertIsNone(reasoning_of(message))
        calls = message["tool_calls"]
        self.assertEqual([c["index"] for c in calls], list(range(len(calls))))
        for call in calls:
            self.assertRegex(call["id"], CALL_ID)
            self.assertEqual(call["type"], "function")
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, schema_of(TOOLS[call["function"]["name"]]))
        usage = body["usage"]
        self.check_cost(usage, GPT, "OpenAI")
        record = self.record(body["id"])
        self.assertEqual(record["finish_reason"], "tool_calls")
        self.assertEqual(record["tokens_completion"], usage["completion_tokens"])

    def test_streamed_as_openai_streams_them(self) -> None:
        response, chunks = self.stream(chat(tools=[WEATHER, TIME], n=2, seed=11))
        *events, last = chunks
        for chunk in events:
            validate_event(CHUNK, chunk)
        self.check_cost(last["usage"], GPT, "OpenAI")
        for index in (0, 1):
            calls: dict[int, dict[str, str]] = {}
            choices = self.chunks_of(events, index)
            self.assertEqual(choices[0]["delta"]["role"], "assistant")
            self.assertIsNone(choices[0]["delta"]["content"])
            for choice in choices[:-1]:
                self.assertIsNone(choice["finish_reason"])
                for delta in choice["delta"].get("tool_calls") or ():
                    if delta["index"] not in calls:
                        # The first delta of a call: index, id, type, name, no arguments.
                        self.assertEqual(set(delta), {"index", "id", "type", "function"})
                        self.assertRegex(delta["id"], CALL_ID)
                        self.assertEqual(delta["type"], "function")
                        self.assertEqual(delta["function"]["arguments"], "")
                        self.assertEqual(delta["index"], len(calls))
                        calls[delta["index"]] = {"name": delta["function"]["name"], "args": ""}
                    else:
                        self.assertEqual(set(delta), {"index", "function"})
                        self.assertEqual(set(delta["function"]), {"arguments"})
                        calls[delta["index"]]["args"] += delta["function"]["arguments"]
            finish = choices[-1]
            self.assertEqual(finish["delta"], {})
            self.assertEqual(finish["finish_reason"], "tool_calls")
            self.assertEqual(finish["native_finish_reason"], "tool_calls")
            self.assertTrue(calls)
            for call in calls.values():
                jsonschema.validate(json.loads(call["args"]), schema_of(TOOLS[call["name"]]))
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertEqual(record["finish_reason"], "tool_calls")
        self.assertEqual(record["tokens_completion"], last["usage"]["completion_tokens"])

    def test_named_tool_finishes_with_stop(self) -> None:
        named = {"type": "function", "function": {"name": "get_time"}}
        body = self.answer(chat(tools=[WEATHER, TIME], tool_choice=named, n=2))
        for choice in body["choices"]:
            self.assertEqual(choice["finish_reason"], "stop")
            self.assertEqual(choice["native_finish_reason"], "stop")
            [call] = choice["message"]["tool_calls"]
            self.assertEqual(call["function"]["name"], "get_time")

    def test_text_after_a_tool_result(self) -> None:
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        body = self.answer(chat(tools=[WEATHER], messages=messages))
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertTrue(choice["message"]["content"])
        self.assertNotIn("tool_calls", choice["message"])

    def test_legacy_functions_answer_in_tool_calls(self) -> None:
        body = self.answer(chat(functions=[WEATHER["function"]]))
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        self.assertNotIn("function_call", choice["message"])
        [call] = choice["message"]["tool_calls"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema_of(WEATHER))

    def test_openai_refusals_in_openrouter_envelope(self) -> None:
        response = self.post("chat/completions", chat(tool_choice="required"))
        error = self.error(response, 400)
        self.assertIn("only allowed when 'tools' are specified", error["message"])

    def test_structured_output(self) -> None:
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        body = self.answer(chat(response_format=fmt, n=2))
        validate(BODY, body)
        for choice in body["choices"]:
            self.assertEqual(choice["finish_reason"], "stop")
            jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)
            self.assertIsNone(choice["message"]["reasoning"])
        _, chunks = self.stream(chat(response_format=fmt))
        text = "".join(c["delta"].get("content") or "" for c in self.chunks_of(chunks, 0))
        jsonschema.validate(json.loads(text), PERSON)


class ReasoningTests(OpenRouterShapeCase):
    def test_visible_reasoning_plain(self) -> None:
        body = self.answer(chat(TALKER, n=2))
        validate(BODY, body)
        usage = body["usage"]
        reasoning = 0
        for choice in body["choices"]:
            message = choice["message"]
            thought = reasoning_of(message)
            assert thought is not None
            self.assertTrue(message["content"])
            reasoning += tokens.count_text(thought)
        details = usage["completion_tokens_details"]
        self.assertEqual(details["reasoning_tokens"], reasoning)
        self.assertGreater(usage["completion_tokens"], reasoning)
        self.assertEqual(self.record(body["id"])["native_tokens_reasoning"], reasoning)

    def test_visible_reasoning_streamed_before_the_content(self) -> None:
        response, chunks = self.stream(chat(TALKER, seed=5))
        *events, last = chunks
        for chunk in events:
            validate_event(CHUNK, chunk)
        kinds = []
        thought = ""
        for choice in self.chunks_of(events, 0)[1:-1]:
            delta = choice["delta"]
            if "reasoning" in delta:
                self.assertEqual(delta["content"], "")
                self.assertEqual(
                    delta["reasoning_details"],
                    [
                        {
                            "type": "reasoning.text",
                            "text": delta["reasoning"],
                            "format": "unknown",
                            "index": 0,
                        }
                    ],
                )
                thought += delta["reasoning"]
                kinds.append("reasoning")
            else:
                self.assertEqual(set(delta), {"content"})
                kinds.append("content")
        self.assertEqual(kinds, sorted(kinds, key=lambda kind: kind != "reasoning"))
        self.assertIn("content", kinds)
        reasoning = last["usage"]["completion_tokens_details"]["reasoning_tokens"]
        self.assertEqual(tokens.count_text(thought), reasoning)
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertEqual(record["native_tokens_reasoning"], reasoning)
        self.assertEqual(record["tokens_completion"], last["usage"]["completion_tokens"])

    def test_a_model_without_reasoning_reasons_when_asked(self) -> None:
        plain = self.answer(chat())
        self.assertIsNone(reasoning_of(plain["choices"][0]["message"]))
        self.assertEqual(plain["usage"]["completion_tokens_details"]["reasoning_tokens"], 0)
        for extra in (
            {"reasoning": {"effort": "low"}},
            {"reasoning": {"max_tokens": 40}},
            {"reasoning": {"enabled": True}},
            {"reasoning": {}},
            {"include_reasoning": True},
            {"reasoning_effort": "low"},
        ):
            body = self.answer(chat(**extra))
            thought = reasoning_of(body["choices"][0]["message"])
            assert thought is not None, extra
            reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
            self.assertEqual(tokens.count_text(thought), reasoning, extra)
        # Saying how, not whether: the model does not reason.
        for extra in (
            {"reasoning": {"exclude": True}},
            {"include_reasoning": False},
            {"reasoning": {"effort": "high", "enabled": False}},
            {"reasoning": {"effort": "none"}},
        ):
            usage = self.answer(chat(**extra))["usage"]
            self.assertEqual(usage["completion_tokens_details"]["reasoning_tokens"], 0, extra)

    def test_exclude_reasons_out_of_sight(self) -> None:
        for model, extra in (
            (GPT, {"reasoning": {"effort": "high", "exclude": True}}),
            (TALKER, {"reasoning": {"exclude": True}}),
            (TALKER, {"include_reasoning": False}),
        ):
            body = self.answer(chat(model, **extra))
            message = body["choices"][0]["message"]
            self.assertIsNone(reasoning_of(message), (model, extra))
            self.assertTrue(message["content"])
            usage = body["usage"]
            reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            self.assertGreater(reasoning, 0, (model, extra))
            self.assertEqual(
                usage["completion_tokens"],
                reasoning + tokens.count_text(message["content"]),
            )

    def test_a_hidden_reasoning_model(self) -> None:
        # OpenAI's reasoning models reason by default, and their provider sends none of it.
        body = self.answer(chat(THINKER))
        message = body["choices"][0]["message"]
        self.assertIsNone(reasoning_of(message))
        usage = body["usage"]
        self.assertGreater(usage["completion_tokens_details"]["reasoning_tokens"], 0)
        for extra in ({"reasoning": {"enabled": False}}, {"reasoning": {"effort": "none"}}):
            usage = self.answer(chat(THINKER, **extra))["usage"]
            self.assertEqual(usage["completion_tokens_details"]["reasoning_tokens"], 0)

    def test_effort_picks_the_mean(self) -> None:
        # The profile's mean tokens per effort (minimal 16 ... high 2048); xhigh is high.
        self.use(tokens_mean=20.0, models=REASONING_MODELS, max_output_tokens=100_000)
        means = {}
        for effort in ("minimal", "low", "medium", "high", "xhigh"):
            usage = self.answer(chat(TALKER, reasoning={"effort": effort}, seed=2))["usage"]
            means[effort] = usage["completion_tokens_details"]["reasoning_tokens"]
        self.assertLess(means["minimal"], means["low"])
        self.assertLess(means["low"], means["medium"])
        self.assertLess(means["medium"], means["high"])
        self.assertEqual(means["xhigh"], means["high"])
        self.assertGreater(means["high"], 1000)

    def test_effort_is_a_share_of_max_tokens(self) -> None:
        for effort, share in (("high", 0.8), ("low", 0.2)):
            body = self.answer(chat(TALKER, max_tokens=1000, reasoning={"effort": effort}))
            usage = body["usage"]
            reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            self.assertLessEqual(reasoning, 1000 * share)
            self.assertLessEqual(usage["completion_tokens"], 1000)

    def test_reasoning_counts_against_max_tokens(self) -> None:
        body = self.answer(chat(max_tokens=10, reasoning={"max_tokens": 4000}))
        choice = body["choices"][0]
        usage = body["usage"]
        self.assertEqual(usage["completion_tokens"], 10)
        self.assertEqual(usage["completion_tokens_details"]["reasoning_tokens"], 10)
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(choice["message"]["content"], "")
        self.assertIsNotNone(reasoning_of(choice["message"]))

    def test_reasoning_and_reasoning_effort_conflict(self) -> None:
        response = self.post(
            "chat/completions", chat(reasoning={"effort": "low"}, reasoning_effort="low")
        )
        error = self.error(response, 400)
        self.assertEqual(
            error["message"], 'Only one of "reasoning" and "reasoning_effort" may be provided'
        )

    def test_reasoning_with_tool_calls(self) -> None:
        extra = {"tools": [WEATHER], "reasoning": {"effort": "low"}}
        body = self.answer(chat(**extra))
        message = body["choices"][0]["message"]
        self.assertIsNotNone(reasoning_of(message))
        self.assertIsNone(message["content"])
        self.assertEqual(body["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(
            list(message),
            ["role", "content", "refusal", "reasoning", "tool_calls", "reasoning_details"],
        )
        _, chunks = self.stream(chat(**extra))
        deltas = [c["delta"] for c in self.chunks_of(chunks, 0)]
        kinds = [
            "reasoning" if "reasoning" in d else "call" if "tool_calls" in d else "other"
            for d in deltas[1:-1]
        ]
        self.assertEqual(kinds, sorted(kinds, key=lambda kind: kind != "reasoning"))
        self.assertEqual(set(kinds), {"reasoning", "call"})
        header = next(d["tool_calls"][0] for d in deltas if "tool_calls" in d)
        self.assertEqual(header["function"], {"name": "get_weather", "arguments": ""})

    def test_a_broken_stream_of_reasoning_and_calls(self) -> None:
        extra = {"tools": [WEATHER], "reasoning": {"max_tokens": 3}, "seed": 1}
        response, chunks = self.stream(chat(FLAKY, **extra), done=False)
        *events, failure = chunks
        self.assertEqual(failure["choices"][0]["finish_reason"], "error")
        deltas = [c["delta"] for c in self.chunks_of(events, 0)]
        thought = "".join(d.get("reasoning") or "" for d in deltas)
        arguments = "".join(
            d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d
        )
        sent = tokens.count_text(thought) + len(tokens.TOKEN.findall(arguments))
        self.assertGreaterEqual(sent, 6)
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertEqual(record["finish_reason"], "error")
        self.assertEqual(record["tokens_completion"], sent)
        self.assertEqual(record["native_tokens_reasoning"], tokens.count_text(thought))

    def test_completions_reason_out_of_sight(self) -> None:
        body = {"model": TALKER, "prompt": "Once upon a time"}
        response = self.post("completions", body)
        answer = response.json()
        validate("CreateCompletionResponse", answer)
        usage = answer["usage"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        self.assertGreater(reasoning, 0)
        self.assertEqual(
            usage["completion_tokens"],
            reasoning + tokens.count_text(answer["choices"][0]["text"]),
        )

    def test_reasoning_max_tokens_over_the_output_limit(self) -> None:
        self.use(max_output_tokens=100)
        self.error(self.post("chat/completions", chat(reasoning={"max_tokens": 101})), 400)
        usage = self.answer(chat(reasoning={"max_tokens": 100}))["usage"]
        self.assertLessEqual(usage["completion_tokens"], 100)


@needs_openai
class SDKTests(SynchronousTestCase):
    """The ``openai`` SDK pointed at ``/api/v1``."""

    def test_tool_calls_and_reasoning(self) -> None:
        # One server for both (trial runs no setUpClass).
        server = MockoaiServer(articles=64, tokens_mean=30, tokens_stddev=5, models=["gpt-4o"])
        server.start()
        self.addCleanup(server.stop)
        client = server.openai_client(base_url=f"{server.url}/api/v1", api_key=KEY)
        self.stream_helper_assembles_tool_calls(client)
        self.reasoning_in_model_extra(client)

    def stream_helper_assembles_tool_calls(self, client: openai.OpenAI) -> None:
        with client.chat.completions.stream(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Weather in Paris and the time?"}],
            tools=[WEATHER, TIME],  # type: ignore[list-item]
            seed=5,
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        choice = final.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        calls = choice.message.tool_calls or []
        self.assertTrue(calls)
        for call in calls:
            jsonschema.validate(
                json.loads(call.function.arguments), schema_of(TOOLS[call.function.name])
            )

    def reasoning_in_model_extra(self, client: openai.OpenAI) -> None:
        completion = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Think first."}],
            extra_body={"reasoning": {"effort": "low"}},
        )
        message = completion.choices[0].message
        extra = message.model_extra or {}
        self.assertTrue(extra["reasoning"])
        self.assertEqual(extra["reasoning_details"][0]["text"], extra["reasoning"])
        assert completion.usage is not None and completion.usage.completion_tokens_details
        self.assertEqual(
            completion.usage.completion_tokens_details.reasoning_tokens,
            tokens.count_text(extra["reasoning"]),
        )
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Think first."}],
            extra_body={"reasoning": {"effort": "low"}},
            stream=True,
        )
        thought = content = ""
        for chunk in stream:
            for choice in chunk.choices:
                thought += (choice.delta.model_extra or {}).get("reasoning") or ""
                content += choice.delta.content or ""
        self.assertTrue(thought)
        self.assertTrue(content)


class LogprobsTests(RouterTestCase):
    """``logprobs`` in OpenRouter mode: OpenAI's shapes, passed through, plain and streamed."""

    def test_chat(self) -> None:
        body = json.loads(self.post("chat/completions", chat(logprobs=True, top_logprobs=2)).body)
        validate(BODY, body)
        choice = body["choices"][0]
        entries = choice["logprobs"]["content"]
        self.assertEqual("".join(e["token"] for e in entries), choice["message"]["content"])
        self.assertTrue(all(len(e["top_logprobs"]) == 2 for e in entries))
        streamed = sse_json(
            self.post("chat/completions", chat(logprobs=True, stream=True, seed=4)).body
        )
        text, tokens = "", ""
        for chunk in streamed:
            for part in chunk["choices"]:
                text += part["delta"].get("content") or ""
                for entry in (part.get("logprobs") or {}).get("content") or ():
                    tokens += entry["token"]
        self.assertEqual(tokens, text)
        self.assertTrue(text)

    def test_completions(self) -> None:
        body = json.loads(self.post("completions", completion(logprobs=1, echo=True)).body)
        choice = body["choices"][0]
        columns = choice["logprobs"]
        self.assertEqual("".join(columns["tokens"]), choice["text"])
        self.assertIsNone(columns["token_logprobs"][0])
        chunks = sse_json(self.post("completions", completion(logprobs=1, stream=True)).body)
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        tokens = "".join(
            t
            for c in chunks
            if c["choices"]
            for t in (c["choices"][0]["logprobs"] or {}).get("tokens", ())
        )
        self.assertEqual(tokens, text)

    def test_none_asked_none_sent(self) -> None:
        body = json.loads(self.post("chat/completions", chat()).body)
        self.assertIsNone(body["choices"][0]["logprobs"])
