"""
The Responses API (``/v1/responses``): the Response object and every
stream event against OpenAI's schemas, the engine's pacing, the store
(retrieve, delete, input items, ``previous_response_id``, across
``--workers``), OpenAI's errors, tool calls and structured output, and the
official SDK unchanged.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai import responses_store
from mockoai.dialects.openai.responses_store import ResponseIds, ResponseStore, Stored, holder
from mockoai.ops.config import Settings
from mockoai.sim import tokens
from mockoai.sim.latency import constant
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import Client, Response, TwistdProcess, make_service

MODEL = "gpt-4o"
RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{50}$")
SPECS = {spec.id: spec for spec in Settings().served.models}
SMALL = ["--articles", "64", "--tokens-mean", "30", "--tokens-stddev", "5"]


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """
    The events of a Responses stream, each ``event: TYPE`` and one
    ``data:`` line (strict framing; no ``[DONE]``), as (type, data).
    """
    text = body.decode("utf-8")
    if not text.endswith("\n\n"):
        raise AssertionError(f"stream does not end with a blank line: {text[-80:]!r}")
    found = []
    for block in text[:-2].split("\n\n"):
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue  # a comment (OpenRouter's ": OPENROUTER PROCESSING")
        if (
            len(lines) != 2
            or not lines[0].startswith("event: ")
            or not lines[1].startswith("data: ")
        ):
            raise AssertionError(f"malformed event: {block!r}")
        kind = lines[0][len("event: ") :]
        data = json.loads(lines[1][len("data: ") :])
        if data["type"] != kind:
            raise AssertionError(f"event {kind!r} carries type {data['type']!r}")
        found.append((kind, data))
    return found


def checked(body: bytes) -> list[dict[str, Any]]:
    """Every event valid, numbered 0, 1, 2, ... in order."""
    found = events(body)
    for position, (_, data) in enumerate(found):
        validate("ResponseStreamEvent", data)
        if data["sequence_number"] != position:
            raise AssertionError(f"event {position} is numbered {data['sequence_number']}")
    return [data for _, data in found]


def output_text(response: dict[str, Any]) -> str:
    """The text of a Response object's messages (the SDK's ``output_text``)."""
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


class ResponsesTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service(tokens_mean=30, tokens_stddev=5)
        self.client = Client(self.service)

    def create(self, **body: Any) -> Response:
        return self.client.post("/v1/responses", {"model": MODEL, "input": "Hello", **body})

    def ok(self, **body: Any) -> dict[str, Any]:
        response = self.create(**body)
        self.assertEqual(response.status, 200, response.body)
        data: dict[str, Any] = response.json()
        validate("Response", data)
        return data

    def assertError(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        **body: Any,
    ) -> dict[str, Any]:
        response = self.create(**body)
        self.assertEqual(response.status, status, response.body)
        validate("ErrorResponse", response.json())
        error: dict[str, Any] = response.json()["error"]
        self.assertEqual(error["message"], message)
        self.assertEqual(error["code"], code)
        self.assertEqual(error["param"], param)
        return error


class PlainTests(ResponsesTestCase):
    def test_completed(self) -> None:
        response = self.create(instructions="Be brief.", metadata={"run": "7"})
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("openai-processing-ms"), "0")
        data = response.json()
        validate("Response", data)
        self.assertRegex(data["id"], RESPONSE_ID)
        self.assertEqual(data["object"], "response")
        self.assertEqual(data["status"], "completed")
        self.assertEqual(data["created_at"], 1_700_000_000)
        self.assertIsNone(data["error"])
        self.assertIsNone(data["incomplete_details"])
        self.assertEqual(data["model"], MODEL)
        self.assertEqual(data["instructions"], "Be brief.")
        self.assertEqual(data["metadata"], {"run": "7"})
        self.assertTrue(data["store"])
        [message] = data["output"]
        self.assertEqual(message["type"], "message")
        self.assertEqual(message["role"], "assistant")
        self.assertEqual(message["status"], "completed")
        self.assertTrue(message["id"].startswith("msg_"))
        [part] = message["content"]
        self.assertEqual(part["annotations"], [])
        usage = data["usage"]
        # Two messages (instructions and input), each 3 tokens of framing, and the priming.
        expected = 3 + 3 + tokens.count_text("Be brief.") + 3 + tokens.count_text("Hello")
        self.assertEqual(usage["input_tokens"], expected)
        self.assertEqual(usage["total_tokens"], usage["input_tokens"] + usage["output_tokens"])
        self.assertEqual(usage["output_tokens_details"], {"reasoning_tokens": 0})
        self.assertEqual(tokens.count_text(part["text"]), usage["output_tokens"])

    def test_incomplete_at_max_output_tokens(self) -> None:
        data = self.ok(max_output_tokens=16, input=[{"role": "user", "content": "Go on"}])
        self.assertEqual(data["status"], "incomplete")
        self.assertEqual(data["incomplete_details"], {"reason": "max_output_tokens"})
        self.assertEqual(data["output"][-1]["status"], "incomplete")
        self.assertEqual(data["usage"]["output_tokens"], 16)
        self.assertEqual(data["max_output_tokens"], 16)

    def test_items_and_images(self) -> None:
        image = {"type": "input_image", "image_url": "https://example.com/cat.png"}
        data = self.ok(
            input=[
                {"role": "developer", "content": "Answer in Latin."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        image,
                    ],
                },
            ]
        )
        self.assertGreater(data["usage"]["input_tokens"], tokens.IMAGE_TOKENS)

    def test_reasoning_model(self) -> None:
        self.service = make_service(models=(SPECS["o4-mini"],), tokens_mean=30, tokens_stddev=5)
        self.client = Client(self.service)
        data = self.client.post(
            "/v1/responses", {"model": "o4-mini", "input": "Why?", "reasoning": {"effort": "low"}}
        ).json()
        validate("Response", data)
        reasoning, message = data["output"]
        self.assertEqual(reasoning["type"], "reasoning")
        self.assertEqual(reasoning["summary"], [])
        self.assertTrue(reasoning["id"].startswith("rs_"))
        self.assertEqual(message["type"], "message")
        details = data["usage"]["output_tokens_details"]
        self.assertGreater(details["reasoning_tokens"], 0)
        self.assertEqual(data["reasoning"], {"effort": "low", "summary": None})
        text = tokens.count_text(output_text(data))
        self.assertEqual(data["usage"]["output_tokens"], text + details["reasoning_tokens"])


class StreamTests(ResponsesTestCase):
    def test_event_sequence(self) -> None:
        response = self.create(stream=True, max_output_tokens=20)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        found = checked(response.body)
        kinds = [e["type"] for e in found]
        self.assertEqual(
            kinds[:4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
            ],
        )
        self.assertEqual(
            kinds[-4:],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete",
            ],
        )
        deltas = [e for e in found if e["type"] == "response.output_text.delta"]
        self.assertEqual(len(deltas), 20)  # one token per event
        created, final = found[0]["response"], found[-1]["response"]
        self.assertEqual(created["status"], "in_progress")
        self.assertEqual(created["output"], [])
        self.assertEqual(final["id"], created["id"])
        self.assertEqual(final["status"], "incomplete")
        item_id = found[2]["item"]["id"]
        self.assertEqual({e["item_id"] for e in deltas}, {item_id})
        self.assertEqual({(e["output_index"], e["content_index"]) for e in deltas}, {(0, 0)})
        text = "".join(e["delta"] for e in deltas)
        self.assertEqual(found[-4]["text"], text)
        self.assertEqual(output_text(final), text)
        self.assertEqual(found[-2]["item"], final["output"][0])
        self.assertEqual(final["usage"]["output_tokens"], 20)
        self.assertTrue(all("obfuscation" in e for e in deltas))
        # What the stream finished is what the store holds.
        stored = self.client.get(f"/v1/responses/{final['id']}").json()
        self.assertEqual(stored, final)

    def test_completed_without_obfuscation(self) -> None:
        found = checked(
            self.create(stream=True, stream_options={"include_obfuscation": False}).body
        )
        self.assertEqual(found[-1]["type"], "response.completed")
        self.assertEqual(found[-1]["response"]["status"], "completed")
        self.assertFalse(any("obfuscation" in e for e in found))

    def test_paced(self) -> None:
        service = make_service(
            tokens_mean=5, tokens_stddev=0, response_delay=constant(0.2), itl=constant(0.05)
        )
        client = Client(service)
        connection = client.send(
            "POST", "/v1/responses", {"model": MODEL, "input": "Hi", "stream": True}
        )
        # The lifecycle at once, before the first token.
        found = events(connection.responses()[0].body)
        self.assertIn("response.in_progress", [kind for kind, _ in found])
        self.assertNotIn("response.output_text.delta", [kind for kind, _ in found])
        service.clock.advance(0.2)
        service.clock.advance(0.05 * 4 + 0.001)
        checked(connection.response().body)

    def test_through_the_engine(self) -> None:
        service = make_service(
            tokens_mean=5,
            tokens_stddev=0,
            response_delay=constant(0.1),
            itl=constant(0.02),
            max_running=1,
        )
        client = Client(service)
        connection = client.send(
            "POST", "/v1/responses", {"model": MODEL, "input": "Hi", "stream": True}
        )
        self.assertIn(b"response.in_progress", connection.received())
        self.assertNotIn(b"response.output_text.delta", connection.received())
        service.clock.advance(0.1 + 5 * 0.02 + 0.001)
        found = checked(connection.response().body)
        self.assertEqual(found[-1]["response"]["usage"]["output_tokens"], 5)
        plain = client.send("POST", "/v1/responses", {"model": MODEL, "input": "Hi"})
        service.clock.advance(0.1 + 4 * 0.02 - 0.001)
        self.assertEqual(plain.responses(), [])
        service.clock.advance(0.0011)
        self.assertEqual(plain.response().header("openai-processing-ms"), "180")

    def test_drained_stream_fails(self) -> None:
        service = make_service(tokens_mean=50, tokens_stddev=0, itl=constant(0.05))
        client = Client(service)
        connection = client.send(
            "POST", "/v1/responses", {"model": MODEL, "input": "Hi", "stream": True}
        )
        service.clock.advance(0.3)
        from mockoai.pipeline import faults
        from mockoai.pipeline.errors import draining

        for stream in list(service.api.streams):
            faults.cut_now(stream, draining())
        found = checked(connection.response().body)
        self.assertEqual(found[-1]["type"], "response.failed")
        failed = found[-1]["response"]
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["error"]["code"], "server_error")
        self.assertIn("shutting down", failed["error"]["message"])


class StoreTests(ResponsesTestCase):
    def test_retrieve_delete_input_items(self) -> None:
        data = self.ok(
            input=[
                {"role": "user", "content": "One"},
                {"role": "user", "content": [{"type": "input_text", "text": "Two"}]},
            ]
        )
        path = f"/v1/responses/{data['id']}"
        again = self.client.get(path)
        self.assertEqual(again.status, 200)
        self.assertEqual(again.json(), data)
        listed = self.client.get(path + "/input_items").json()
        validate("ResponseItemList", listed)
        self.assertEqual(listed["object"], "list")
        self.assertFalse(listed["has_more"])
        texts = [item["content"][0]["text"] for item in listed["data"]]
        self.assertEqual(texts, ["Two", "One"])  # newest first, by default
        ascending = self.client.get(path + "/input_items?order=asc&limit=1").json()
        self.assertEqual(ascending["data"][0]["content"][0]["text"], "One")
        self.assertTrue(ascending["has_more"])
        after = self.client.get(
            path + f"/input_items?order=asc&after={ascending['last_id']}"
        ).json()
        self.assertEqual([i["content"][0]["text"] for i in after["data"]], ["Two"])
        deleted = self.client.request("DELETE", path)
        self.assertEqual(deleted.json(), {"id": data["id"], "object": "response", "deleted": True})
        for response in (self.client.get(path), self.client.request("DELETE", path)):
            self.assertEqual(response.status, 404)
            error = response.json()["error"]
            self.assertEqual(error["message"], f"No response found with id '{data['id']}'.")
            self.assertEqual(error["code"], "response_not_found")

    def test_every_kind_of_input_item_listed(self) -> None:
        data = self.ok(
            input=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
                {"type": "item_reference", "id": "msg_elsewhere"},
            ]
        )
        listed = self.client.get(f"/v1/responses/{data['id']}/input_items?order=asc").json()
        validate("ResponseItemList", listed)
        kinds = [(item["type"], item.get("role")) for item in listed["data"]]
        self.assertEqual(
            kinds,
            [
                ("message", "system"),
                ("message", "user"),
                ("message", "assistant"),
                ("function_call", None),
                ("function_call_output", None),
            ],
        )
        self.assertEqual(len({item["id"] for item in listed["data"]}), 5)
        self.assertEqual(listed["data"][2]["content"][0]["type"], "output_text")

    def test_store_false(self) -> None:
        data = self.ok(store=False)
        self.assertFalse(data["store"])
        self.assertEqual(self.client.get(f"/v1/responses/{data['id']}").status, 404)
        self.assertError(
            400,
            f"Previous response with id '{data['id']}' not found.",
            "previous_response_not_found",
            "previous_response_id",
            previous_response_id=data["id"],
        )

    def test_previous_response_counts_the_conversation(self) -> None:
        first = self.ok(input="Name three rivers.")
        second = self.ok(input="And one more.", previous_response_id=first["id"])
        own = 3 + 3 + tokens.count_text("And one more.")
        earlier = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
        self.assertEqual(second["usage"]["input_tokens"], own + earlier)
        self.assertEqual(second["previous_response_id"], first["id"])
        third = self.ok(input="Thanks.", previous_response_id=second["id"])
        chain = second["usage"]["input_tokens"] + second["usage"]["output_tokens"]
        self.assertEqual(third["usage"]["input_tokens"], 3 + 3 + 2 + chain)
        self.assertError(
            400,
            "Previous response with id 'resp_nope' not found.",
            "previous_response_not_found",
            "previous_response_id",
            previous_response_id="resp_nope",
        )

    def test_bounded_by_count_and_age(self) -> None:
        clock = self.service.clock
        store = ResponseStore(2, 10.0, clock)
        for n in range(3):
            store.add(Stored(f"r{n}", b"{}", b'"x"', 1, (), 0))
        self.assertEqual(len(store), 2)
        self.assertIsNone(store.local("r0"))
        clock.advance(10.0)
        self.assertIsNone(store.local("r2"))
        self.assertEqual(len(store), 0)

    def test_ids_say_their_worker(self) -> None:
        ids = ResponseIds(3)
        made = ids.make("resp")
        self.assertRegex(made, RESPONSE_ID)
        self.assertEqual(holder(made), 3)
        self.assertIsNone(holder("resp_123"))
        self.assertEqual(holder(ResponseIds().make("resp")), 0)
        self.assertRegex(ids.call(), r"^call_[0-9a-f]{24}$")
        self.assertNotEqual(ids.make("resp"), made)

    def test_routed_to_the_holder(self) -> None:
        """A store that asks another worker: what that worker's store answers."""
        clock = self.service.clock
        from twisted.internet.defer import succeed

        theirs = ResponseStore(10, 60.0, clock, worker=1)
        made = ResponseIds(1).make("resp")
        theirs.add(Stored(made, b'{"id":"x"}', b'"hi"', 42, ("call_1",), 7))
        asked: list[tuple[int, str, str]] = []

        def ask(index: int, question: str, subject: str) -> Any:
            asked.append((index, question, subject))
            return succeed(json.loads(json.dumps(theirs.answer(question, subject))))

        ours = ResponseStore(10, 60.0, clock, worker=0, ask=ask)
        got = self.successResultOf(ours.get(made))
        assert got is not None
        self.assertEqual(
            (got.body, got.context_tokens, got.calls), (b'{"id":"x"}', 42, ("call_1",))
        )
        self.assertTrue(self.successResultOf(ours.delete(made)))
        self.assertIsNone(self.successResultOf(ours.get(made)))
        self.assertEqual([a[:2] for a in asked], [(1, "get"), (1, "delete"), (1, "get")])
        # An id of our own is never asked about.
        self.assertIsNone(self.successResultOf(ours.get(ResponseIds(0).make("resp"))))
        self.assertEqual(len(asked), 3)
        self.assertEqual(responses_store.item_list([], 20, "desc", None)[:10], b'{"object":')


class ErrorTests(ResponsesTestCase):
    def test_models(self) -> None:
        self.assertError(
            400,
            "The requested model 'nope' does not exist.",
            "model_not_found",
            "model",
            model="nope",
        )
        self.assertError(
            400,
            "The requested model 'text-embedding-3-small' is not supported with the Responses API.",
            "model_not_found",
            "model",
            model="text-embedding-3-small",
        )
        self.assertError(
            400,
            "Missing required parameter: 'model'.",
            "missing_required_parameter",
            "model",
            model=None,
        )

    def test_body(self) -> None:
        self.assertError(
            400,
            "Missing required parameter: 'input'.",
            "missing_required_parameter",
            "input",
            input=None,
        )
        self.assertError(
            400,
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            "but got 8 instead.",
            "integer_below_min_value",
            "max_output_tokens",
            max_output_tokens=8,
        )
        self.assertError(
            400,
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
            "3 instead.",
            "decimal_above_max_value",
            "temperature",
            temperature=3,
        )
        self.assertError(
            400,
            "Invalid value: 'robot'. Supported values are: 'user', 'assistant', 'system', and "
            "'developer'.",
            "invalid_value",
            "input[0].role",
            input=[{"role": "robot", "content": "x"}],
        )
        self.assertError(
            400,
            "Missing required parameter: 'input[1].content'.",
            "missing_required_parameter",
            "input[1].content",
            input=[{"role": "user", "content": "x"}, {"role": "user"}],
        )
        error = self.assertError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            "properties, but got an object with 17 properties instead.",
            "object_above_max_properties",
            "metadata",
            metadata={str(n): "v" for n in range(17)},
        )
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            None,
            "stream_options",
            stream_options={"include_obfuscation": False},
        )
        self.assertError(
            400,
            "Invalid value: 'middle'. Supported values are: 'auto', and 'disabled'.",
            "invalid_value",
            "truncation",
            truncation="middle",
        )

    def test_hosted_tools_refused(self) -> None:
        for kind in ("web_search_preview", "file_search", "code_interpreter", "image_generation"):
            self.assertError(
                400,
                f"Hosted tool '{kind}' is not supported with {MODEL}.",
                None,
                "tools",
                tools=[{"type": kind}],
            )
        self.assertError(
            400,
            "Missing required parameter: 'tools[0].name'.",
            "missing_required_parameter",
            "tools[0].name",
            tools=[{"type": "function"}],
        )

    def test_formats(self) -> None:
        self.assertError(
            400,
            "Missing required parameter: 'text.format.name'.",
            "missing_required_parameter",
            "text.format.name",
            text={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        )
        self.assertError(
            400,
            "Response input messages must contain the word 'json' in some form to use "
            "'text.format' of type 'json_object'.",
            None,
            "input",
            text={"format": {"type": "json_object"}},
        )

    def test_unanswered_call(self) -> None:
        self.assertError(
            400,
            "No tool call found for function call output with call_id call_x.",
            None,
            "input",
            input=[{"type": "function_call_output", "call_id": "call_x", "output": "42"}],
        )
        # A call the input makes itself is one its outputs may answer.
        self.ok(
            input=[
                {"type": "function_call", "call_id": "call_x", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_x", "output": "42"},
            ]
        )


class ToolTests(ResponsesTestCase):
    TOOLS: ClassVar[list[dict[str, Any]]] = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        }
    ]

    def test_call_then_answer(self) -> None:
        first = self.ok(input="Weather in Oslo?", tools=self.TOOLS, tool_choice="required")
        [call] = first["output"]
        self.assertEqual(call["type"], "function_call")
        self.assertEqual(call["name"], "get_weather")
        self.assertRegex(call["call_id"], r"^call_[0-9a-f]{24}$")
        self.assertTrue(call["id"].startswith("fc_"))
        self.assertIsInstance(json.loads(call["arguments"])["city"], str)
        self.assertEqual(first["tools"][0]["strict"], True)  # the Responses API's default
        self.assertEqual(first["tool_choice"], "required")
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}
        second = self.ok(input=[output], previous_response_id=first["id"], tools=self.TOOLS)
        self.assertEqual([item["type"] for item in second["output"]], ["message"])
        self.assertError(
            400,
            "No tool call found for function call output with call_id call_other.",
            None,
            "input",
            input=[dict(output, call_id="call_other")],
            previous_response_id=first["id"],
        )

    def test_strict_unless_told_otherwise(self) -> None:
        loose = {"type": "object", "properties": {"city": {"type": "string"}}}
        tool = {"type": "function", "name": "get_weather", "parameters": loose}
        self.assertError(
            400,
            "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' "
            "is required to be supplied and to be false.",
            "invalid_function_parameters",
            "tools[0].parameters",
            tools=[tool],
        )
        data = self.ok(tools=[dict(tool, strict=False)])
        self.assertEqual(data["tools"][0]["strict"], False)
        fmt = {"type": "json_schema", "name": "Loose", "schema": loose, "strict": True}
        self.assertError(
            400,
            "Invalid schema for response_format 'Loose': In context=(), 'additionalProperties' "
            "is required to be supplied and to be false.",
            "invalid_json_schema",
            "text.format.schema",
            text={"format": fmt},
        )
        self.ok(text={"format": dict(fmt, strict=False)})

    def test_named_and_none(self) -> None:
        named = self.ok(
            input="x", tools=self.TOOLS, tool_choice={"type": "function", "name": "get_weather"}
        )
        self.assertEqual(named["output"][0]["type"], "function_call")
        self.assertEqual(named["tool_choice"], {"type": "function", "name": "get_weather"})
        none = self.ok(input="x", tools=self.TOOLS, tool_choice="none")
        self.assertEqual([item["type"] for item in none["output"]], ["message"])
        self.assertError(
            400,
            "Tool choice 'function' not found in 'tools' parameter: no function named 'nope'.",
            None,
            "tool_choice",
            tools=self.TOOLS,
            tool_choice={"type": "function", "name": "nope"},
        )

    def test_streamed_call(self) -> None:
        found = checked(self.create(stream=True, tools=self.TOOLS, tool_choice="required").body)
        kinds = [e["type"] for e in found]
        self.assertEqual(kinds[2], "response.output_item.added")
        self.assertEqual(found[2]["item"]["arguments"], "")
        self.assertEqual(found[2]["item"]["status"], "in_progress")
        deltas = [
            e["delta"] for e in found if e["type"] == "response.function_call_arguments.delta"
        ]
        done = next(e for e in found if e["type"] == "response.function_call_arguments.done")
        self.assertEqual("".join(deltas), done["arguments"])
        self.assertEqual(done["name"], "get_weather")
        self.assertEqual(kinds[-2:], ["response.output_item.done", "response.completed"])
        final = found[-1]["response"]["output"][0]
        self.assertEqual(final["arguments"], done["arguments"])
        self.assertEqual(final["call_id"], found[2]["item"]["call_id"])

    def test_structured_output(self) -> None:
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        }
        fmt = {"type": "json_schema", "name": "Person", "schema": schema, "strict": True}
        data = self.ok(text={"format": fmt})
        person = json.loads(output_text(data))
        self.assertEqual(sorted(person), ["age", "name"])
        self.assertIsInstance(person["age"], int)
        self.assertEqual(data["text"]["format"]["name"], "Person")
        found = checked(self.create(text={"format": fmt}, stream=True).body)
        self.assertIsInstance(json.loads(output_text(found[-1]["response"])), dict)
        anything = self.ok(input="Reply in JSON.", text={"format": {"type": "json_object"}})
        self.assertIsInstance(json.loads(output_text(anything)), dict)

    def test_visible_reasoning_streamed(self) -> None:
        self.service = make_service(models=("qwen",), reasoning="visible", tokens_mean=10)
        self.client = Client(self.service)
        found = checked(
            self.client.post(
                "/v1/responses", {"model": "qwen", "input": "Think.", "stream": True}
            ).body
        )
        final = found[-1]["response"]
        reasoning, message = final["output"]
        thought = "".join(e["delta"] for e in found if e["type"] == "response.reasoning_text.delta")
        self.assertEqual(reasoning["content"][0]["text"], thought)
        self.assertEqual(message["type"], "message")
        self.assertEqual((reasoning["id"], message["id"]), (found[2]["item"]["id"], message["id"]))
        indices = [e["output_index"] for e in found if e["type"] == "response.output_item.added"]
        self.assertEqual(indices, [0, 1])


@needs_openai
class SDKTests(SynchronousTestCase):
    """The official SDK, unchanged, against ``twistd -n mockoai``."""

    def setUp(self) -> None:
        # A server per test: trial runs no setUpClass.
        self.server = TwistdProcess(SMALL)
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self.server.stop)

    def sdk(self) -> Any:
        client = openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key="x", max_retries=0, timeout=15
        )
        self.addCleanup(client.close)
        return client

    def test_create_retrieve_delete(self) -> None:
        client = self.sdk()
        response = client.responses.create(
            model=MODEL, input="Say something.", instructions="Latin only.", max_output_tokens=16
        )
        self.assertEqual(response.status, "incomplete")
        self.assertEqual(response.incomplete_details.reason, "max_output_tokens")
        self.assertTrue(response.output_text)
        self.assertEqual(response.usage.output_tokens, 16)
        again = client.responses.retrieve(response.id)
        self.assertEqual(again.output_text, response.output_text)
        items = client.responses.input_items.list(response.id)
        self.assertEqual([item.type for item in items.data], ["message"])
        self.assertEqual(items.data[0].content[0].text, "Say something.")
        client.responses.delete(response.id)
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(response.id)

    def test_stream_and_final_response(self) -> None:
        client = self.sdk()
        deltas = []
        with client.responses.stream(model=MODEL, input="Tell a story.") as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            final = stream.get_final_response()
        self.assertEqual(final.status, "completed")
        self.assertEqual(final.output_text, "".join(deltas))
        raw = client.responses.create(model=MODEL, input="Hi", stream=True)
        kinds = [event.type for event in raw]
        self.assertEqual(kinds[0], "response.created")
        self.assertEqual(kinds[-1], "response.completed")

    def test_parse_structured_output(self) -> None:
        import pydantic

        class Person(pydantic.BaseModel):
            name: str
            age: int

        parsed = self.sdk().responses.parse(
            model=MODEL, input="Invent a person.", text_format=Person
        )
        self.assertIsInstance(parsed.output_parsed, Person)
        with self.sdk().responses.stream(
            model=MODEL, input="Invent a person.", text_format=Person
        ) as stream:
            final = stream.get_final_response()
        self.assertIsInstance(final.output_parsed, Person)

    def test_function_calling_across_turns(self) -> None:
        client = self.sdk()
        tools = [
            {
                "type": "function",
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "strict": True,
            }
        ]
        first = client.responses.create(
            model=MODEL, input="Weather in Oslo?", tools=tools, tool_choice="required"
        )
        [call] = [item for item in first.output if item.type == "function_call"]
        self.assertIn("city", json.loads(call.arguments))
        second = client.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
            tools=tools,
        )
        self.assertTrue(second.output_text)
        self.assertGreater(
            second.usage.input_tokens, first.usage.input_tokens + first.usage.output_tokens
        )
        with self.assertRaises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
        self.assertEqual(caught.exception.param, "tools")


class WorkersTests(SynchronousTestCase):
    """
    With ``--workers 2`` a response lives in the worker that made it; every
    worker answers for it, asking the holder.  Each request goes out on a
    new connection, so the kernel spreads them over both workers.
    """

    def test_every_worker_finds_every_response(self) -> None:
        server = TwistdProcess([*SMALL, "--workers", "2"]).start()
        self.addCleanup(server.cleanup)
        self.addCleanup(server.stop)
        # Until both workers answered some (the second may still be starting).
        made: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len({holder(r["id"]) for r in made}) < 2 or len(made) < 12:
            self.assertLess(time.monotonic(), deadline, "both workers should have answered")
            body = {"model": MODEL, "input": f"n{len(made)}"}
            status, answer = _exchange(server.port, "POST", "/v1/responses", body)
            self.assertEqual(status, 200, answer)
            made.append(json.loads(answer))
        for response in made:
            for _ in range(3):
                status, body = _exchange(server.port, "GET", f"/v1/responses/{response['id']}")
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body), response)
            status, body = _exchange(
                server.port,
                "POST",
                "/v1/responses",
                {"model": MODEL, "input": "more", "previous_response_id": response["id"]},
            )
            self.assertEqual(status, 200, body)
            context = response["usage"]["total_tokens"]
            self.assertGreater(json.loads(body)["usage"]["input_tokens"], context)
        for response in made:
            status, _ = _exchange(server.port, "DELETE", f"/v1/responses/{response['id']}")
            self.assertEqual(status, 200)
            status, _ = _exchange(server.port, "GET", f"/v1/responses/{response['id']}")
            self.assertEqual(status, 404)


def _exchange(port: int, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    """One request on a connection of its own."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class OpenRouterTests(SynchronousTestCase):
    """``/api/v1/responses``: the Responses API in OpenRouter's shape, stateless."""

    KEY: ClassVar[dict[str, str]] = {"Authorization": "Bearer sk-or-test"}

    def setUp(self) -> None:
        self.service = make_service(tokens_mean=10, tokens_stddev=1)
        self.client = Client(self.service)

    def create(self, **body: Any) -> Response:
        request = {"model": MODEL, "input": "Hello", **body}
        return self.client.post("/api/v1/responses", request, headers=self.KEY)

    def test_plain(self) -> None:
        response = self.create()
        self.assertEqual(response.status, 200)
        data = response.json()
        validate("Response", data)
        self.assertRegex(data["id"], r"^gen-1700000000-")
        self.assertEqual(response.header("X-Generation-Id"), data["id"])
        self.assertFalse(data["store"])
        usage = data["usage"]
        # gpt-4o's list prices: $2.50 and $10 per million tokens.
        cost = usage["input_tokens"] * 2.5e-6 + usage["output_tokens"] * 1e-5
        self.assertAlmostEqual(usage["cost"], cost)
        self.assertFalse(usage["is_byok"])
        record = self.client.get(f"/api/v1/generation?id={data['id']}", headers=self.KEY)
        self.assertAlmostEqual(record.json()["data"]["total_cost"], cost)
        self.assertEqual(record.json()["data"]["tokens_prompt"], usage["input_tokens"])
        # Nothing is kept: OpenRouter's Responses API is stateless.
        self.assertEqual(self.client.get(f"/v1/responses/{data['id']}").status, 404)

    def test_stream(self) -> None:
        found = checked(self.create(stream=True).body)
        self.assertEqual(found[0]["type"], "response.created")
        final = found[-1]["response"]
        self.assertEqual(found[-1]["type"], "response.completed")
        self.assertIn("cost", final["usage"])
        deltas = "".join(e["delta"] for e in found if e["type"] == "response.output_text.delta")
        self.assertEqual(output_text(final), deltas)

    def test_processing_comments_while_waiting(self) -> None:
        service = make_service(tokens_mean=3, tokens_stddev=0, response_delay=constant(2.5))
        connection = Client(service).send(
            "POST",
            "/api/v1/responses",
            {"model": MODEL, "input": "Hi", "stream": True},
            headers=self.KEY,
        )
        service.clock.advance(2.6)
        body = connection.response().body
        self.assertIn(b": OPENROUTER PROCESSING\n\n", body)
        self.assertEqual(checked(body)[-1]["type"], "response.completed")

    def test_routing_and_errors(self) -> None:
        data = self.create(model="nope/none", models=[MODEL]).json()
        self.assertEqual(data["model"], MODEL)
        refused = self.create(previous_response_id="resp_x")
        self.assertEqual(refused.status, 400)
        self.assertIn("stateless", refused.json()["error"]["message"])
        self.assertEqual(refused.json()["error"]["code"], 400)
        invalid = self.create(max_output_tokens=2)
        self.assertEqual(invalid.status, 400)
        self.assertEqual(set(invalid.json()["error"]), {"code", "message"})
        embedding = self.create(model="text-embedding-3-small")
        self.assertEqual(embedding.status, 400)
        self.assertEqual(
            embedding.json()["error"]["message"],
            "text-embedding-3-small is an embedding model and cannot be used with the responses "
            "endpoint. Use the /embeddings endpoint instead.",
        )
        chat = self.client.post(
            "/api/v1/chat/completions",
            {"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]},
            headers=self.KEY,
        )
        self.assertEqual(chat.status, 400)
        self.assertIn("cannot be used with the chat/completions endpoint", chat.body.decode())
        keyless = self.client.post("/api/v1/responses", {"model": MODEL, "input": "x"})
        self.assertEqual(keyless.status, 401)
        self.assertEqual(
            keyless.json(), {"error": {"code": 401, "message": "No auth credentials found"}}
        )
