"""
Tool calls, structured outputs and reasoning on the chat endpoint: OpenAI's
400s, when a model calls, the bodies and stream chunks against the spec's
schemas (in memory, on a L{Clock}), and the official SDK's helpers against a
real server (``parse``, ``pydantic_function_tool``, ``stream``, an agent
loop).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from twisted.trial.unittest import SynchronousTestCase

from mockoai.testing import MockoaiServer
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import Client, make_service, sse_json, validate_event

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CHUNK = "CreateChatCompletionStreamResponse"
BODY = "CreateChatCompletionResponse"


def schema_of(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"]["parameters"]  # type: ignore[no-any-return]


class ToolTestCase(SynchronousTestCase):
    """An in-memory service on a clock."""

    def setUp(self) -> None:
        self.client = Client(make_service(tokens_mean=20, tokens_stddev=2))

    def chat(self, status: int = 200, **body: Any) -> Any:
        body.setdefault("model", "gpt-4o")
        body.setdefault("messages", ASK)
        response = self.client.post("/v1/chat/completions", body)
        self.assertEqual(response.status, status, response.body)
        if body.get("stream"):
            return sse_json(response.body)
        return json.loads(response.body)

    def refused(self, param: str, **body: Any) -> str:
        error = self.chat(400, **body)["error"]
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertEqual(error["param"], param, error)
        return str(error["message"])


class RefusalTests(ToolTestCase):
    """OpenAI's 400s for tools, tool choices, tool turns and formats."""

    def test_tool_name_pattern(self) -> None:
        tool = {"type": "function", "function": {"name": "get weather"}}
        message = self.refused("tools[0].function.name", tools=[tool])
        self.assertIn("does not match pattern", message)

    def test_tool_name_too_long(self) -> None:
        tool = {"type": "function", "function": {"name": "x" * 65}}
        message = self.refused("tools[0].function.name", tools=[tool])
        self.assertIn("maximum length 64", message)

    def test_parameters_not_an_object_schema(self) -> None:
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
        message = self.refused("tools[0].function.parameters", tools=[tool])
        self.assertEqual(
            message,
            "Invalid schema for function 'f': schema must be a JSON Schema of "
            "'type: \"object\"', got 'type: \"string\"'.",
        )

    def test_too_many_tools(self) -> None:
        tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
        message = self.refused("tools", tools=tools)
        self.assertIn("maximum length 128", message)

    def test_tool_choice_names_an_undefined_function(self) -> None:
        choice = {"type": "function", "function": {"name": "nope"}}
        self.refused("tool_choice.function.name", tools=[WEATHER], tool_choice=choice)

    def test_tool_choice_without_tools(self) -> None:
        message = self.refused("tool_choice", tool_choice="required")
        self.assertIn("only allowed when 'tools' are specified", message)

    def test_unanswered_tool_calls(self) -> None:
        messages = [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "and?"},
        ]
        message = self.refused("messages.[1].role", tools=[WEATHER], messages=messages)
        self.assertTrue(message.endswith("did not have response messages: call_2"), message)

    def test_tool_message_without_a_call(self) -> None:
        messages = [*ASK, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
        message = self.refused("messages.[1].role", messages=messages)
        self.assertIn("must be a response to a preceeding message with 'tool_calls'", message)

    def test_unsatisfiable_schema(self) -> None:
        tool = {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 5}},
                    "required": ["n"],
                },
            },
        }
        message = self.refused("tools[0].function.parameters", tools=[tool])
        self.assertTrue(message.startswith("Invalid schema for function 'f': "), message)

    def test_json_object_needs_the_word_json(self) -> None:
        message = self.refused("messages", response_format={"type": "json_object"})
        self.assertIn("must contain the word 'json'", message)

    def test_reasoning_effort_on_a_model_without_reasoning(self) -> None:
        error = self.chat(400, reasoning_effort="high")["error"]
        self.assertEqual(error["code"], "unsupported_parameter")
        self.assertEqual(error["param"], "reasoning_effort")


class CallTests(ToolTestCase):
    """When a model calls, what it calls with, and how it is sent."""

    def test_auto_calls_with_valid_arguments(self) -> None:
        body = self.chat(tools=[WEATHER])
        validate(BODY, body)
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        message = choice["message"]
        self.assertIsNone(message["content"])
        [call] = message["tool_calls"]
        self.assertRegex(call["id"], r"^call_[A-Za-z0-9]{24}$")
        self.assertEqual(call["type"], "function")
        self.assertEqual(call["function"]["name"], "get_weather")
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema_of(WEATHER))
        usage = body["usage"]
        arguments = call["function"]["arguments"]
        self.assertGreater(usage["completion_tokens"], 0)
        self.assertLess(usage["completion_tokens"], len(arguments) + 1)

    def test_answers_in_text_after_a_tool_result(self) -> None:
        messages = [
            *ASK,
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
        body = self.chat(tools=[WEATHER], messages=messages)
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertTrue(choice["message"]["content"])
        self.assertNotIn("tool_calls", choice["message"])

    def test_none_never_calls_and_required_always_does(self) -> None:
        plain = self.chat(tools=[WEATHER], tool_choice="none")["choices"][0]
        self.assertNotIn("tool_calls", plain["message"])
        messages = [
            *ASK,
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
        forced = self.chat(tools=[WEATHER], tool_choice="required", messages=messages)
        self.assertEqual(forced["choices"][0]["finish_reason"], "tool_calls")

    def test_named_function_finishes_with_stop(self) -> None:
        choice = {"type": "function", "function": {"name": "get_time"}}
        body = self.chat(tools=[WEATHER, TIME], tool_choice=choice, n=3)
        for answer in body["choices"]:
            self.assertEqual(answer["finish_reason"], "stop")
            [call] = answer["message"]["tool_calls"]
            self.assertEqual(call["function"]["name"], "get_time")

    def test_parallel_calls_are_distinct_and_ids_unique(self) -> None:
        seen: set[str] = set()
        counts = set()
        for seed in range(30):
            body = self.chat(tools=[WEATHER, TIME], seed=seed)
            calls = body["choices"][0]["message"]["tool_calls"]
            counts.add(len(calls))
            names = [c["function"]["name"] for c in calls]
            self.assertEqual(len(set(names)), len(names))
            for call in calls:
                self.assertNotIn(call["id"], seen)
                seen.add(call["id"])
        self.assertEqual(counts, {1, 2})
        single = self.chat(tools=[WEATHER, TIME], parallel_tool_calls=False, seed=3)
        self.assertEqual(len(single["choices"][0]["message"]["tool_calls"]), 1)

    def test_same_seed_same_arguments(self) -> None:
        first = self.chat(tools=[WEATHER], seed=42)["choices"][0]["message"]["tool_calls"]
        again = self.chat(tools=[WEATHER], seed=42)["choices"][0]["message"]["tool_calls"]
        self.assertEqual([c["function"] for c in first], [c["function"] for c in again])

    def test_tool_call_rate_zero_answers_in_text(self) -> None:
        self.client = Client(make_service(tool_call_rate=0.0))
        body = self.chat(tools=[WEATHER])
        self.assertNotIn("tool_calls", body["choices"][0]["message"])
        self.assertEqual(
            self.chat(tools=[WEATHER], tool_choice="required")["choices"][0]["finish_reason"],
            "tool_calls",
        )

    def test_stream_deltas_as_openai_sends_them(self) -> None:
        chunks = self.chat(tools=[WEATHER, TIME], stream=True, seed=7, n=2)
        for chunk in chunks:
            validate_event(CHUNK, chunk)
        for index in (0, 1):
            calls: dict[int, dict[str, Any]] = {}
            finish = None
            for chunk in chunks:
                for choice in chunk["choices"]:
                    if choice["index"] != index:
                        continue
                    finish = choice["finish_reason"] or finish
                    for delta in choice["delta"].get("tool_calls") or ():
                        if delta["index"] not in calls:
                            # The first delta of a call: index, id, type, name, no arguments.
                            self.assertEqual(delta["function"]["arguments"], "")
                            self.assertRegex(delta["id"], r"^call_")
                            self.assertEqual(delta["type"], "function")
                            calls[delta["index"]] = {
                                "name": delta["function"]["name"],
                                "arguments": "",
                            }
                        else:
                            self.assertEqual(set(delta), {"index", "function"})
                            self.assertEqual(set(delta["function"]), {"arguments"})
                            calls[delta["index"]]["arguments"] += delta["function"]["arguments"]
            self.assertEqual(finish, "tool_calls")
            self.assertEqual(sorted(calls), list(range(len(calls))))
            tools = {"get_weather": WEATHER, "get_time": TIME}
            for call in calls.values():
                jsonschema.validate(json.loads(call["arguments"]), schema_of(tools[call["name"]]))

    def test_legacy_functions(self) -> None:
        function = WEATHER["function"]
        body = self.chat(functions=[function])
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "function_call")
        call = choice["message"]["function_call"]
        self.assertEqual(call["name"], "get_weather")
        jsonschema.validate(json.loads(call["arguments"]), schema_of(WEATHER))
        chunks = self.chat(functions=[function], stream=True)
        arguments = "".join(
            c["choices"][0]["delta"].get("function_call", {}).get("arguments", "")
            for c in chunks
            if c["choices"]
        )
        jsonschema.validate(json.loads(arguments), schema_of(WEATHER))


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


class StructuredOutputTests(ToolTestCase):
    """``response_format`` and vLLM's guided decoding."""

    def test_json_schema(self) -> None:
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        }
        body = self.chat(response_format=fmt)
        validate(BODY, body)
        content = body["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), PERSON)
        streamed = self.chat(response_format=fmt, stream=True)
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"]
        )
        jsonschema.validate(json.loads(text), PERSON)

    def test_json_object(self) -> None:
        messages = [{"role": "user", "content": "Answer in JSON."}]
        body = self.chat(response_format={"type": "json_object"}, messages=messages)
        self.assertIsInstance(json.loads(body["choices"][0]["message"]["content"]), dict)

    def test_cut_by_max_tokens_is_truncated_json(self) -> None:
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        body = self.chat(response_format=fmt, max_tokens=3)
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(body["usage"]["completion_tokens"], 3)
        with self.assertRaises(ValueError):
            json.loads(choice["message"]["content"])

    def test_strict_schema_refused(self) -> None:
        loose = {"type": "object", "properties": {"a": {"type": "string"}}}
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "loose", "schema": loose, "strict": True},
        }
        message = self.refused("response_format", response_format=fmt)
        self.assertTrue(message.startswith("Invalid schema for response_format 'loose'"), message)

    def test_guided_json_and_choice(self) -> None:
        body = self.chat(guided_json=PERSON)
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), PERSON)
        options = ["yes", "no", "maybe later"]
        for seed in range(5):
            body = self.chat(guided_choice=options, seed=seed)
            self.assertIn(body["choices"][0]["message"]["content"], options)


class ReasoningTests(ToolTestCase):
    """Hidden reasoning (OpenAI's reasoning models) and visible reasoning (vLLM's)."""

    def test_hidden_reasoning_is_counted_and_timed(self) -> None:
        low = self.chat(model="gpt-5", reasoning_effort="low", seed=1)
        high = self.chat(model="gpt-5", reasoning_effort="high", seed=1)
        low_reasoning = low["usage"]["completion_tokens_details"]["reasoning_tokens"]
        high_reasoning = high["usage"]["completion_tokens_details"]["reasoning_tokens"]
        self.assertGreater(low_reasoning, 0)
        self.assertGreater(high_reasoning, 4 * low_reasoning)
        self.assertGreater(high["usage"]["completion_tokens"], high_reasoning)
        self.assertNotIn("reasoning_content", high["choices"][0]["message"])
        validate(BODY, high)

    def test_no_logprobs_from_reasoning_models(self) -> None:
        error = self.chat(400, model="gpt-5", logprobs=True)["error"]
        self.assertEqual(error["code"], "unsupported_parameter")
        self.assertEqual(error["param"], "logprobs")

    def test_reasoning_counts_against_max_completion_tokens(self) -> None:
        body = self.chat(model="gpt-5", reasoning_effort="high", max_completion_tokens=50)
        self.assertEqual(body["usage"]["completion_tokens"], 50)
        self.assertEqual(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 50)
        self.assertEqual(body["choices"][0]["finish_reason"], "length")
        self.assertEqual(body["choices"][0]["message"]["content"], "")

    def test_hidden_reasoning_delays_the_first_token(self) -> None:
        service = make_service(itl=0.01, models=["gpt-5"], tokens_mean=5, tokens_stddev=0)
        client = Client(service)
        connection = client.send(
            "POST",
            "/v1/chat/completions",
            json_body={
                "model": "gpt-5",
                "messages": ASK,
                "stream": True,
                "reasoning_effort": "low",
                "seed": 3,
            },
        )
        clock = service.clock
        started = clock.seconds()
        for _ in range(10_000):
            data = b"".join(r.body for r in connection.responses())
            if b'"content":"' in data.replace(b'"content":""', b""):
                break
            clock.advance(0.01)
        # The low effort's 128 tokens or so at 10 ms each come first.
        self.assertGreater(clock.seconds() - started, 0.5)

    def test_visible_reasoning_comes_first(self) -> None:
        self.client = Client(make_service(reasoning="visible", tokens_mean=20))
        body = self.chat()
        message = body["choices"][0]["message"]
        self.assertTrue(message["reasoning_content"])
        self.assertTrue(message["content"])
        chunks = self.chat(stream=True)
        kinds = [
            "reasoning" if "reasoning_content" in c["choices"][0]["delta"] else "content"
            for c in chunks
            if c["choices"]
            and c["choices"][0]["delta"].get(
                "reasoning_content", c["choices"][0]["delta"].get("content")
            )
        ]
        self.assertEqual(kinds, sorted(kinds, key=lambda k: k != "reasoning"))
        self.assertIn("reasoning", kinds)


@needs_openai
class SDKTests(SynchronousTestCase):
    """The official SDK's helpers, unchanged, against a real server."""

    def setUp(self) -> None:
        # One server per test: trial runs no setUpClass.
        self.server = MockoaiServer(articles=64, tokens_mean=30, tokens_stddev=5).start()
        self.addCleanup(self.server.stop)

    def client(self) -> openai.OpenAI:
        return self.server.openai_client(max_retries=0)

    def test_parse_with_a_pydantic_model(self) -> None:
        import pydantic

        class Person(pydantic.BaseModel):
            name: str
            age: int
            tags: list[str]

        completion = self.client().chat.completions.parse(
            model="gpt-4o", messages=ASK, response_format=Person
        )
        parsed = completion.choices[0].message.parsed
        self.assertIsInstance(parsed, Person)

    def test_pydantic_function_tool(self) -> None:
        import pydantic

        class GetWeather(pydantic.BaseModel):
            city: str
            days: int

        completion = self.client().chat.completions.parse(
            model="gpt-4o",
            messages=ASK,
            tools=[openai.pydantic_function_tool(GetWeather)],
        )
        [call] = completion.choices[0].message.tool_calls or []
        self.assertIsInstance(call.function.parsed_arguments, GetWeather)

    def test_stream_helper_assembles_tool_calls(self) -> None:
        with self.client().chat.completions.stream(
            model="gpt-4o", messages=ASK, tools=[WEATHER, TIME], seed=5
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        calls = final.choices[0].message.tool_calls or []
        self.assertTrue(calls)
        for call in calls:
            json.loads(call.function.arguments)
        self.assertEqual(final.choices[0].finish_reason, "tool_calls")

    def test_agent_loop_runs_to_its_end(self) -> None:
        client = self.client()
        messages: list[Any] = list(ASK)
        turns = 0
        for _ in range(5):
            completion = client.chat.completions.create(
                model="gpt-4o", messages=messages, tools=[WEATHER]
            )
            message = completion.choices[0].message
            if not message.tool_calls:
                break
            turns += 1
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                args = json.loads(call.function.arguments)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": f"sunny in {args['city']}"}
                )
        # One round of calls, then the answer in text.
        self.assertEqual(turns, 1)
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertTrue(completion.choices[0].message.content)
