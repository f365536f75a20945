"""Request validation: OpenAI's exact errors, and the typed request it builds."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai import validate
from mockoai.ops.config import CHAT, COMPLETIONS
from mockoai.pipeline import errors
from mockoai.sim import tokens
from mockoai.sim.request import GenerationRequest

MESSAGES = [{"role": "user", "content": "Hello there"}]


def chat_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not DROP}


def completions_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()


class ErrorAssertions(SynchronousTestCase):
    def assertAPIError(
        self,
        call: Callable[[], object],
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = errors.INVALID_REQUEST,
    ) -> errors.APIError:
        with self.assertRaises(errors.APIError) as caught:
            call()
        error = caught.exception
        self.assertEqual(
            (error.status, error.message, error.type, error.param, error.code),
            (status, message, type, param, code),
        )
        body = json.loads(error.body())
        self.assertEqual(
            body,
            {"error": {"message": message, "type": type, "param": param, "code": code}},
        )
        return error

    def chat_error(
        self, body: dict[str, Any], message: str, param: str | None = None, code: str | None = None
    ) -> None:
        self.assertAPIError(lambda: validate.chat(body), message, param, code)

    def completions_error(
        self, body: dict[str, Any], message: str, param: str | None = None, code: str | None = None
    ) -> None:
        self.assertAPIError(lambda: validate.completions(body), message, param, code)


class ParseBodyTests(ErrorAssertions):
    INVALID_JSON = (
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
        "contact us through our help center at help.openai.com.)"
    )

    def test_object(self) -> None:
        self.assertEqual(validate.parse_body(b'{"a": [1, 2]}'), {"a": [1, 2]})
        self.assertEqual(validate.parse_body(b" {} "), {})

    def test_invalid_json(self) -> None:
        for raw in [b"", b"{", b"{'a': 1}", b'{"a": }', b"[1,]", b"\xff\xfe", b"nul"]:
            self.assertAPIError(lambda raw=raw: validate.parse_body(raw), self.INVALID_JSON)

    def test_not_an_object(self) -> None:
        for raw, kind in [
            (b"[1, 2]", "an array"),
            (b'"text"', "a string"),
            (b"3", "an integer"),
            (b"1.5", "a decimal"),
            (b"true", "a boolean"),
            (b"null", "null"),
        ]:
            self.assertAPIError(
                lambda raw=raw: validate.parse_body(raw),
                f"Invalid body: expected an object, but got {kind} instead.",
                code="invalid_type",
            )

    def test_lone_surrogates_refused_naming_the_field(self) -> None:
        for raw, where, surrogate in [
            (b'{"stop": "\\ud800"}', "stop", "\\ud800"),
            (b'{"stop": ["a", "x\\uDFFF"]}', "stop[1]", "\\udfff"),
            (b'{"model": "\xed\xa0\x80"}', "model", "\\ud800"),  # as UTF-8 bytes
            (b'{"a": {"b": [1, {"c": "\\ud83d!"}]}}', "a.b[1].c", "\\ud83d"),
            (b'{"messages": [{"\\udc00": 1}]}', "messages[0].\\udc00", "\\udc00"),  # a key
        ]:
            self.assertAPIError(
                lambda raw=raw: validate.parse_body(raw),
                f"Invalid '{where}': the string holds a lone UTF-16 surrogate ({surrogate}), "
                "which is not valid Unicode. Please send text as UTF-8, with surrogates only "
                "in pairs.",
                param=where,
                code="invalid_value",
            )

    def test_what_looks_like_a_surrogate_but_is_not(self) -> None:
        for raw, parsed in [
            (b'{"stop": "\\ud83d\\ude00"}', {"stop": "\U0001f600"}),  # a valid pair
            (b'{"stop": "\\\\ud800"}', {"stop": "\\ud800"}),  # an escaped backslash
            ('{"stop": "\ud55c"}'.encode(), {"stop": "\ud55c"}),  # Hangul: 0xed, then 0x95
            (b'{"stop": "a\\u0000b"}', {"stop": "a\x00b"}),  # NUL is text
        ]:
            self.assertEqual(validate.parse_body(raw), parsed)

    def test_overlong_utf8_is_not_json(self) -> None:
        for raw in [b'{"stop": "\xc0\xaf"}', b'{"stop": "\xe0\x80\xaf"}', b'{"s": "\xc0\x80"}']:
            self.assertAPIError(lambda raw=raw: validate.parse_body(raw), self.INVALID_JSON)


class ChatTests(ErrorAssertions):
    def test_minimal_request(self) -> None:
        request = validate.chat(chat_body())
        self.assertEqual(
            request,
            GenerationRequest(
                kind=CHAT, model="gpt-4o", prompt_tokens=tokens.count_messages(MESSAGES)
            ),
        )
        self.assertEqual(request.prompt_tokens, 3 + 1 + 2 + 3)
        self.assertFalse(request.stream)
        self.assertTrue(request.include_obfuscation)
        self.assertIsNone(request.max_tokens)

    def test_all_fields(self) -> None:
        request = validate.chat(
            chat_body(
                n=3,
                stream=True,
                stream_options={
                    "include_usage": True,
                    "continuous_usage_stats": True,
                    "include_obfuscation": False,
                },
                max_tokens=50,
                stop=["a", "b"],
                seed=-7,
                ignore_eos=True,
                min_tokens=10,
                temperature=0.7,
                top_p=1,
                presence_penalty=-2,
                frequency_penalty=2.0,
                user="u",
                logit_bias={"50256": -100},
                logprobs=True,
                top_logprobs=20,
                extra_unknown_field={"ignored": True},
            )
        )
        self.assertEqual(request.n, 3)
        self.assertTrue(request.stream)
        self.assertTrue(request.include_usage)
        self.assertTrue(request.continuous_usage)
        self.assertFalse(request.include_obfuscation)
        self.assertEqual((request.max_tokens, request.max_tokens_param), (50, "max_tokens"))
        self.assertEqual(request.stop, ("a", "b"))
        self.assertEqual(request.seed, -7)
        self.assertTrue(request.ignore_eos)
        self.assertEqual(request.min_tokens, 10)
        self.assertEqual(request.prompts, 1)
        self.assertEqual(request.echo, ())

    def test_tools_count_as_prompt(self) -> None:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        plain = validate.chat(chat_body()).prompt_tokens
        self.assertEqual(
            validate.chat(chat_body(tools=tools)).prompt_tokens, plain + tokens.count_value(tools)
        )
        self.chat_error(
            chat_body(tools={}),
            "Invalid type for 'tools': expected an array, but got an object instead.",
            "tools",
            "invalid_type",
        )

    def test_model(self) -> None:
        for body in [chat_body(model=DROP), chat_body(model=""), chat_body(model=None)]:
            self.chat_error(body, "you must provide a model parameter")
        self.chat_error(
            chat_body(model=5),
            "Invalid type for 'model': expected a string, but got an integer instead.",
            "model",
            "invalid_type",
        )
        self.assertEqual(validate.chat(chat_body(model="org/m")).model, "org/m")

    def test_messages(self) -> None:
        self.chat_error(
            chat_body(messages=DROP),
            "Missing required parameter: 'messages'.",
            "messages",
            "missing_required_parameter",
        )
        self.chat_error(
            chat_body(messages="hi"),
            "Invalid type for 'messages': expected an array, but got a string instead.",
            "messages",
            "invalid_type",
        )
        self.chat_error(
            chat_body(messages=[]),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
        self.chat_error(
            chat_body(messages=[{"role": "user", "content": "x"}, 5]),
            "Invalid type for 'messages[1]': expected an object, but got an integer instead.",
            "messages[1]",
            "invalid_type",
        )

    def test_roles(self) -> None:
        self.chat_error(
            chat_body(messages=[{"content": "x"}]),
            "Missing required parameter: 'messages[0].role'.",
            "messages[0].role",
            "missing_required_parameter",
        )
        self.chat_error(
            chat_body(messages=[{"role": "wizard", "content": "x"}]),
            "Invalid value: 'wizard'. Supported values are: 'system', 'assistant', 'user', "
            "'function', 'tool', and 'developer'.",
            "messages[0].role",
            "invalid_value",
        )
        for role in validate.ROLES:
            message: dict[str, Any] = {"role": role, "content": "x"}
            messages = [message]
            if role == "tool":
                # A tool result answers a call (tests.test_tools).
                message["tool_call_id"] = "call_1"
                call = {"id": "call_1", "type": "function", "function": {"name": "f"}}
                messages.insert(0, {"role": "assistant", "tool_calls": [call]})
            self.assertEqual(validate.chat(chat_body(messages=messages)).kind, CHAT)

    def test_content(self) -> None:
        self.chat_error(
            chat_body(messages=[{"role": "user"}]),
            "Missing required parameter: 'messages[0].content'.",
            "messages[0].content",
            "missing_required_parameter",
        )
        self.chat_error(
            chat_body(messages=[{"role": "user", "content": None}]),
            "Missing required parameter: 'messages[0].content'.",
            "messages[0].content",
            "missing_required_parameter",
        )
        self.chat_error(
            chat_body(messages=[{"role": "user", "content": 5}]),
            "Invalid type for 'messages[0].content': expected a string or an array, "
            "but got an integer instead.",
            "messages[0].content",
            "invalid_type",
        )
        self.chat_error(
            chat_body(messages=[{"role": "user", "content": ["text"]}]),
            "Invalid type for 'messages[0].content[0]': expected an object, "
            "but got a string instead.",
            "messages[0].content[0]",
            "invalid_type",
        )
        self.chat_error(
            chat_body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "Missing required parameter: 'messages[0].content[0].type'.",
            "messages[0].content[0].type",
            "missing_required_parameter",
        )
        self.chat_error(
            chat_body(messages=[{"role": "tool", "content": "42"}]),
            "Missing required parameter: 'messages[0].tool_call_id'.",
            "messages[0].tool_call_id",
            "missing_required_parameter",
        )

    def test_assistant_may_omit_content(self) -> None:
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for message in [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "assistant", "content": None},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        ]:
            messages = [*MESSAGES, message]
            if "tool_calls" in message:
                # Every call is answered before the next turn (tests.test_tools).
                messages.append({"role": "tool", "tool_call_id": "c", "content": "done"})
            request = validate.chat(chat_body(messages=messages))
            self.assertEqual(request.prompt_tokens, tokens.count_messages(messages))
        self.chat_error(
            chat_body(messages=[{"role": "assistant"}]),
            "Missing required parameter: 'messages[0].content'.",
            "messages[0].content",
            "missing_required_parameter",
        )

    def test_n(self) -> None:
        self.chat_error(
            chat_body(n=0),
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
            "n",
            "integer_below_min_value",
        )
        self.chat_error(
            chat_body(n=129),
            "Invalid 'n': integer above maximum value. Expected a value <= 128, "
            "but got 129 instead.",
            "n",
            "integer_above_max_value",
        )
        for value, kind in [("2", "a string"), (2.0, "a decimal"), (True, "a boolean")]:
            self.chat_error(
                chat_body(n=value),
                f"Invalid type for 'n': expected an integer, but got {kind} instead.",
                "n",
                "invalid_type",
            )
        self.assertEqual(validate.chat(chat_body(n=128)).n, 128)
        self.assertEqual(validate.chat(chat_body(n=None)).n, 1)

    def test_huge_integers(self) -> None:
        huge = 10**400
        self.chat_error(
            chat_body(n=huge),
            f"Invalid 'n': integer above maximum value. Expected a value <= 128, "
            f"but got {huge} instead.",
            "n",
            "integer_above_max_value",
        )
        self.chat_error(
            chat_body(max_tokens=-huge),
            f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
            f"but got {-huge} instead.",
            "max_tokens",
            "integer_below_min_value",
        )

    def test_max_tokens(self) -> None:
        self.chat_error(
            chat_body(max_tokens=0),
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
            "but got 0 instead.",
            "max_tokens",
            "integer_below_min_value",
        )
        self.chat_error(
            chat_body(max_completion_tokens=0),
            "Invalid 'max_completion_tokens': integer below minimum value. "
            "Expected a value >= 1, but got 0 instead.",
            "max_completion_tokens",
            "integer_below_min_value",
        )
        self.chat_error(
            chat_body(max_tokens="10"),
            "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
            "max_tokens",
            "invalid_type",
        )
        request = validate.chat(chat_body(max_tokens=10))
        self.assertEqual((request.max_tokens, request.max_tokens_param), (10, "max_tokens"))

    def test_max_completion_tokens_overrides_max_tokens(self) -> None:
        request = validate.chat(chat_body(max_tokens=10, max_completion_tokens=20))
        self.assertEqual(
            (request.max_tokens, request.max_tokens_param), (20, "max_completion_tokens")
        )
        request = validate.chat(chat_body(max_completion_tokens=5))
        self.assertEqual(
            (request.max_tokens, request.max_tokens_param), (5, "max_completion_tokens")
        )
        # A bad max_tokens is still reported even when the newer name is given.
        self.chat_error(
            chat_body(max_tokens=0, max_completion_tokens=20),
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
            "but got 0 instead.",
            "max_tokens",
            "integer_below_min_value",
        )

    def test_stop(self) -> None:
        self.assertEqual(validate.chat(chat_body(stop="END")).stop, ("END",))
        self.assertEqual(validate.chat(chat_body(stop="")).stop, ())
        self.assertEqual(validate.chat(chat_body(stop=None)).stop, ())
        self.assertEqual(validate.chat(chat_body(stop=["a", "b"])).stop, ("a", "b"))
        self.assertEqual(validate.chat(chat_body(stop=["a", ""])).stop, ("a",))
        self.assertEqual(validate.chat(chat_body(stop=list("abcd"))).stop, tuple("abcd"))
        self.assertEqual(validate.chat(chat_body(stop=[])).stop, ())
        self.chat_error(
            chat_body(stop=list("abcde")),
            "Invalid 'stop': array too long. Expected an array with maximum length 4, "
            "but got an array with length 5 instead.",
            "stop",
            "array_above_max_length",
        )
        self.chat_error(
            chat_body(stop=["a", 5]),
            "Invalid type for 'stop[1]': expected a string, but got an integer instead.",
            "stop[1]",
            "invalid_type",
        )
        self.chat_error(
            chat_body(stop=5),
            "Invalid type for 'stop': expected a string or an array of strings, "
            "but got an integer instead.",
            "stop",
            "invalid_type",
        )

    def test_stream_options(self) -> None:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        self.chat_error(
            chat_body(stream_options={"include_usage": True}), message, "stream_options"
        )
        self.chat_error(
            chat_body(stream=False, stream_options={"include_usage": True}),
            message,
            "stream_options",
        )
        self.chat_error(
            chat_body(stream=True, stream_options=[]),
            "Invalid type for 'stream_options': expected an object, but got an array instead.",
            "stream_options",
            "invalid_type",
        )
        self.chat_error(
            chat_body(stream=True, stream_options={"include_usage": "yes"}),
            "Invalid type for 'stream_options.include_usage': expected a boolean, "
            "but got a string instead.",
            "stream_options.include_usage",
            "invalid_type",
        )
        self.chat_error(
            chat_body(stream="true"),
            "Invalid type for 'stream': expected a boolean, but got a string instead.",
            "stream",
            "invalid_type",
        )
        request = validate.chat(chat_body(stream=True, stream_options={}))
        self.assertEqual(
            (request.include_usage, request.continuous_usage, request.include_obfuscation),
            (False, False, True),
        )
        request = validate.chat(chat_body(stream=True, stream_options=None))
        self.assertTrue(request.stream)

    def test_numbers_in_range(self) -> None:
        cases = [
            ("temperature", 2.5, "above", "<= 2", "2.5"),
            ("temperature", -0.1, "below", ">= 0", "-0.1"),
            ("top_p", 1.5, "above", "<= 1", "1.5"),
            ("top_p", -1, "below", ">= 0", "-1"),
            ("presence_penalty", -3, "below", ">= -2", "-3"),
            ("frequency_penalty", 2.01, "above", "<= 2", "2.01"),
        ]
        for name, value, side, bound, shown in cases:
            where = "maximum" if side == "above" else "minimum"
            code = "max" if side == "above" else "min"
            self.chat_error(
                chat_body(**{name: value}),
                f"Invalid '{name}': decimal {side} {where} value. Expected a value {bound}, "
                f"but got {shown} instead.",
                name,
                f"decimal_{side}_{code}_value",
            )
        self.chat_error(
            chat_body(temperature="hot"),
            "Invalid type for 'temperature': expected a number, but got a string instead.",
            "temperature",
            "invalid_type",
        )
        for name, value in [("temperature", 0), ("temperature", 2), ("top_p", 0.5)]:
            self.assertEqual(validate.chat(chat_body(**{name: value})).kind, CHAT)

    def test_logprobs(self) -> None:
        self.chat_error(
            chat_body(top_logprobs=5),
            "Using top_logprobs requires logprobs to be set to true.",
            "top_logprobs",
            "invalid_value",
        )
        self.chat_error(
            chat_body(top_logprobs=5, logprobs=False),
            "Using top_logprobs requires logprobs to be set to true.",
            "top_logprobs",
            "invalid_value",
        )
        self.chat_error(
            chat_body(top_logprobs=21, logprobs=True),
            "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 20, "
            "but got 21 instead.",
            "top_logprobs",
            "integer_above_max_value",
        )
        self.assertEqual(validate.chat(chat_body(logprobs=True, top_logprobs=0)).kind, CHAT)

    def test_min_tokens(self) -> None:
        self.chat_error(
            chat_body(max_tokens=10, min_tokens=11),
            "min_tokens must be less than or equal to max_tokens=10, got 11.",
            "min_tokens",
            "invalid_value",
        )
        self.chat_error(
            chat_body(max_completion_tokens=10, min_tokens=11),
            "min_tokens must be less than or equal to max_tokens=10, got 11.",
            "min_tokens",
            "invalid_value",
        )
        self.chat_error(
            chat_body(min_tokens=-1),
            "Invalid 'min_tokens': integer below minimum value. Expected a value >= 0, "
            "but got -1 instead.",
            "min_tokens",
            "integer_below_min_value",
        )
        self.assertEqual(validate.chat(chat_body(max_tokens=10, min_tokens=10)).min_tokens, 10)
        self.assertEqual(validate.chat(chat_body(min_tokens=5000)).min_tokens, 5000)

    def test_other_types(self) -> None:
        for name, value, expected, got in [
            ("seed", "1", "an integer", "a string"),
            ("seed", 1.0, "an integer", "a decimal"),
            ("user", 5, "a string", "an integer"),
            ("logit_bias", [], "an object", "an array"),
            ("ignore_eos", 1, "a boolean", "an integer"),
            ("logprobs", "yes", "a boolean", "a string"),
        ]:
            self.chat_error(
                chat_body(**{name: value}),
                f"Invalid type for '{name}': expected {expected}, but got {got} instead.",
                name,
                "invalid_type",
            )


class CompletionsTests(ErrorAssertions):
    def request(self, **fields: Any) -> GenerationRequest:
        return validate.completions(completions_body(**fields))

    def test_prompt_forms(self) -> None:
        for prompt, prompts, count in [
            ("Say this is a test", 1, 5),
            ("", 1, 0),
            (["a b", "c"], 2, 3),
            ([1, 2, 3], 1, 3),
            ([[1, 2], [3]], 2, 3),
            (["a b", [7, 8, 9]], 2, 5),
        ]:
            request = self.request(prompt=prompt)
            self.assertEqual((request.prompts, request.prompt_tokens), (prompts, count), prompt)
            self.assertEqual(request.kind, COMPLETIONS)

    def test_prompt_errors(self) -> None:
        for body in [completions_body(prompt=DROP), completions_body(prompt=None)]:
            self.completions_error(
                body,
                "Missing required parameter: 'prompt'.",
                "prompt",
                "missing_required_parameter",
            )
        self.completions_error(
            completions_body(prompt=[]),
            "Invalid 'prompt': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "prompt",
            "empty_array",
        )
        self.completions_error(
            completions_body(prompt=5),
            "Invalid type for 'prompt': expected a string or an array, but got an integer instead.",
            "prompt",
            "invalid_type",
        )
        for prompt, index, kind in [
            ([5, "a"], 0, "an integer"),
            (["a", None], 1, "null"),
            ([[]], 0, "an array"),
            ([["a"]], 0, "an array"),
            (["a", [1, 2.5]], 1, "an array"),
            ([{"text": "a"}], 0, "an object"),
        ]:
            self.completions_error(
                completions_body(prompt=prompt),
                f"Invalid type for 'prompt[{index}]': expected a string or an array of "
                f"integers, but got {kind} instead.",
                f"prompt[{index}]",
                "invalid_type",
            )

    def test_model_checked_after_prompt(self) -> None:
        self.completions_error(completions_body(model=DROP), "you must provide a model parameter")

    def test_max_completion_tokens_is_chat_only(self) -> None:
        request = self.request(max_tokens=7, max_completion_tokens=20)
        self.assertEqual((request.max_tokens, request.max_tokens_param), (7, "max_tokens"))
        self.assertIsNone(self.request(max_completion_tokens=20).max_tokens)

    def test_best_of(self) -> None:
        self.completions_error(
            completions_body(n=2, best_of=1),
            "best_of must be greater than or equal to n.",
            "best_of",
            "invalid_value",
        )
        self.completions_error(
            completions_body(best_of=21),
            "Invalid 'best_of': integer above maximum value. Expected a value <= 20, "
            "but got 21 instead.",
            "best_of",
            "integer_above_max_value",
        )
        self.assertEqual(self.request(n=2, best_of=2).n, 2)

    def test_n_times_prompts(self) -> None:
        self.completions_error(
            completions_body(prompt=["a", "b"], n=65),
            "Invalid 'n': integer above maximum value. Expected a value <= 64, but got 65 instead.",
            "n",
            "integer_above_max_value",
        )
        request = self.request(prompt=["a", "b"], n=64)
        self.assertEqual((request.n, request.prompts), (64, 2))

    def test_echo(self) -> None:
        self.assertEqual(self.request(prompt="Say this", echo=True).echo, ("Say this",))
        self.assertEqual(self.request(prompt=["a", "b"], echo=True).echo, ("a", "b"))
        self.assertEqual(self.request(echo=False).echo, ())
        for prompt in [[1, 2], ["a", [1, 2]]]:
            self.completions_error(
                completions_body(prompt=prompt, echo=True),
                "echo is only supported with text prompts by this server.",
                "echo",
                "invalid_value",
            )
        self.completions_error(
            completions_body(echo="yes"),
            "Invalid type for 'echo': expected a boolean, but got a string instead.",
            "echo",
            "invalid_type",
        )

    def test_suffix_and_logprobs(self) -> None:
        self.completions_error(
            completions_body(suffix=5),
            "Invalid type for 'suffix': expected a string, but got an integer instead.",
            "suffix",
            "invalid_type",
        )
        self.completions_error(
            completions_body(logprobs=6),
            "Invalid 'logprobs': integer above maximum value. Expected a value <= 5, "
            "but got 6 instead.",
            "logprobs",
            "integer_above_max_value",
        )
        self.assertEqual(self.request(suffix="x", logprobs=5).kind, COMPLETIONS)

    def test_shared_checks(self) -> None:
        self.completions_error(
            completions_body(stream_options={"include_usage": True}),
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
        self.completions_error(
            completions_body(max_tokens=5, min_tokens=6),
            "min_tokens must be less than or equal to max_tokens=5, got 6.",
            "min_tokens",
            "invalid_value",
        )
        request = self.request(stream=True, stream_options={"include_usage": True}, stop="\n")
        self.assertTrue(request.include_usage)
        self.assertEqual(request.stop, ("\n",))


# --- property: nothing but APIError ever escapes validation -----------------

#: Text, or text spliced with lone surrogates, a valid pair and NUL.
TEXT = st.text() | st.lists(
    st.text(max_size=3) | st.sampled_from(["\ud800", "\udfff", "\ud83d", "\ud83d\ude00", "\x00"]),
    min_size=1,
    max_size=4,
).map("".join)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

KEYS = st.sampled_from(
    [
        "model", "messages", "prompt", "n", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "min_tokens", "stop", "seed", "temperature", "top_p",
        "presence_penalty", "frequency_penalty", "user", "logit_bias", "logprobs",
        "top_logprobs", "tools", "ignore_eos", "best_of", "echo", "suffix",
    ]
)  # fmt: skip

ROLE = st.sampled_from([*validate.ROLES, "wizard"]) | JSON
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE},
    optional={"content": JSON | TEXT, "name": JSON, "tool_call_id": JSON, "tool_calls": JSON},
)
NEARLY_VALID = st.fixed_dictionaries(
    {"model": st.just("m") | JSON},
    optional={
        "messages": st.lists(MESSAGE | JSON, max_size=4) | JSON,
        "prompt": st.lists(TEXT | st.lists(st.integers()) | JSON, max_size=4) | JSON,
        "stream": st.booleans() | JSON,
        "stream_options": st.dictionaries(
            st.sampled_from(["include_usage", "continuous_usage_stats", "include_obfuscation"]),
            st.booleans() | JSON,
        )
        | JSON,
        "n": st.integers(-5, 200) | JSON,
        "max_tokens": st.integers(-5, 10_000) | JSON,
        "stop": st.lists(TEXT, max_size=6) | JSON,
    },
)
#: JSON objects with strings made of what hostile clients send: escapes of
#: lone surrogates, surrogates and overlong forms as raw bytes, NUL.
HOSTILE_BYTES = st.lists(
    st.sampled_from(
        [
            *(b"a", b"\\ud800", b"\\uDC00", b"\\ud83d\\ude00", b"\xed\xa0\x80", b"\xed\xbf\xbf"),
            *(
                b"\xc0\xaf",
                b"\xe0\x80\xaf",
                b"\xf0\x80\x80\xaf",
                b"\\u0000",
                b"\x00",
                b"\xed\x95\x9c",
            ),
        ]
    ),
    max_size=6,
).map(lambda parts: b'{"stop": "' + b"".join(parts) + b'"}')
BODIES = NEARLY_VALID | st.dictionaries(KEYS | st.text(max_size=8), JSON, max_size=8) | JSON


class ValidationProperties(SynchronousTestCase):
    def check(self, body: object) -> None:
        raw = json.dumps(body).encode()
        for endpoint in (validate.chat, validate.completions):
            try:
                parsed = validate.parse_body(raw)
                self.assertUnicode(parsed)
                request = endpoint(parsed)
            except errors.APIError as e:
                self.assertIn(e.status, (400, 404))
                self.assertEqual(e.type, errors.INVALID_REQUEST)
                decoded = json.loads(e.body())
                self.assertEqual(set(decoded["error"]), {"message", "type", "param", "code"})
            else:
                self.assertIsInstance(request, GenerationRequest)
                self.assertIsInstance(parsed, dict)
                self.assertGreaterEqual(request.prompt_tokens, 0)
                self.assertTrue(1 <= request.n * request.prompts <= validate.MAX_N)
                self.assertLessEqual(len(request.stop), validate.MAX_STOP)
                if request.max_tokens is not None:
                    self.assertGreaterEqual(request.max_tokens, max(1, request.min_tokens))

    @settings(max_examples=200, deadline=None)
    @given(BODIES)
    def test_any_json_body_validates_or_raises_api_error(self, body: object) -> None:
        self.check(body)

    def assertUnicode(self, value: object) -> None:
        """Every string (key or value) a parsed body holds can be written as UTF-8."""
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, dict):
            for key, child in value.items():
                self.assertUnicode(key)
                self.assertUnicode(child)
        elif isinstance(value, list):
            for child in value:
                self.assertUnicode(child)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=64) | HOSTILE_BYTES)
    def test_any_bytes_parse_or_raise_api_error(self, raw: bytes) -> None:
        try:
            parsed = validate.parse_body(raw)
        except errors.APIError as e:
            self.assertEqual(e.status, 400)
        else:
            self.assertIsInstance(parsed, dict)
            self.assertUnicode(parsed)
