# -*- test-case-name: tests.test_embeddings -*-
"""
``POST /v1/embeddings``: OpenAI's validation and errors, the same gate as
every generation (keys, rate limits charged the prompt's tokens), the
model's engine or latency model for the time (a prefill: nothing is
generated), and the vectors of L{mockoai.sim.embeddings}.

Not a dialect of the generation pipeline, since nothing is generated: it
takes the same steps in the same order -- parse, resolve, gate, time --
with the pipeline's pieces (L{Gate.charge_prompt}, L{after_tokens} over a
plan of no choices, the request's L{Outcome}), so its requests are counted,
limited, queued and logged as every other.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Union

import numpy as np
from twisted.internet.defer import Deferred

from mockoai.dialects.openai import validate
from mockoai.dialects.openai.dialect import _is_json
from mockoai.ops.config import EMBEDDINGS
from mockoai.pipeline import errors
from mockoai.pipeline.errors import APIError
from mockoai.pipeline.media import JSON, dumps
from mockoai.pipeline.outcome import attach
from mockoai.pipeline.stream import after_tokens
from mockoai.sim import embeddings, tokens
from mockoai.sim.embeddings import Embedder
from mockoai.sim.request import GenerationRequest

if TYPE_CHECKING:
    from mockoai.dialects.openai.dialect import OpenAI
    from mockoai.interfaces import Request
    from mockoai.ops.config import InputLimits
    from mockoai.ops.stats import Stats
    from mockoai.pipeline.gate import Gate
    from mockoai.sim.core import ServedModel

#: Inputs per request, and tokens of all of them together, at most (OpenAI's).
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000

#: One input: text, or token ids.
Input = Union[str, list[int]]


def invalid_input() -> APIError:
    """OpenAI's answer to any input it cannot take: empty, too many, of the wrong type."""
    return APIError(
        400,
        "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference.",
    )


def not_an_embedding_model() -> APIError:
    return APIError(403, "You are not allowed to generate embeddings from this model")


def fixed_dimensions() -> APIError:
    return APIError(400, "This model does not support specifying dimensions.")


def input_too_long(limit: int, tokens: int) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {limit} tokens, however you requested "
        f"{tokens} tokens ({tokens} in your prompt; 0 for the completion). "
        "Please reduce your prompt; or completion length.",
    )


def request_too_large(tokens: int) -> APIError:
    return APIError(
        400,
        f"Requested {tokens} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
        type="max_tokens_per_request",
        code="max_tokens_per_request",
    )


class EmbeddingRequest:
    """A validated body: the model, its inputs, and how to answer."""

    __slots__ = ("base64", "dimensions", "inputs", "model")

    def __init__(
        self, model: str, inputs: list[Input], base64: bool, dimensions: int | None
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.base64 = base64
        self.dimensions = dimensions


def _inputs(value: object) -> list[Input]:
    """A string, strings, token ids, or lists of token ids: one list of inputs."""
    if type(value) is str:
        if not value:
            raise invalid_input()
        return [value]
    if type(value) is not list or not value:
        raise invalid_input()
    first = value[0]
    if type(first) is int:
        if not all(type(v) is int and v >= 0 for v in value):
            raise invalid_input()
        return [value]
    if len(value) > MAX_INPUTS:
        raise invalid_input()
    if type(first) is str:
        if not all(type(v) is str and v for v in value):
            raise invalid_input()
    elif not all(
        type(v) is list and v and all(type(t) is int and t >= 0 for t in v) for v in value
    ):
        raise invalid_input()
    return value


def parse(body: dict[str, object], limits: InputLimits) -> EmbeddingRequest:
    """The body, validated as OpenAI validates it (the model's own limits come later)."""
    model = body.get("model")
    if model is None or model == "":
        raise errors.missing_model()
    if type(model) is not str:
        raise errors.invalid_type("model", "a string", model)
    if body.get("input") is None:
        raise errors.missing("input")
    inputs = _inputs(body["input"])
    longest, chars = limits.max_string_length, 0
    for i, item in enumerate(inputs):
        if type(item) is str:
            if len(item) > longest:
                where = "input" if type(body["input"]) is str else f"input[{i}]"
                raise errors.string_too_long(where, longest, len(item))
            chars += len(item)
    if limits.max_prompt_chars and chars > limits.max_prompt_chars:
        raise errors.invalid(
            "input",
            f"The input is too long: {chars} characters of text, over this server's limit of "
            f"{limits.max_prompt_chars}. Please reduce the length of the input.",
            code="context_length_exceeded",
        )
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise errors.invalid_value("encoding_format", encoding, ("float", "base64"))
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is not int:
            raise errors.invalid_type("dimensions", "an integer", dimensions)
        if dimensions < 1:
            raise errors.below_min("dimensions", 1, dimensions)
    user = body.get("user")
    if user is not None and type(user) is not str:
        raise errors.invalid_type("user", "a string", user)
    return EmbeddingRequest(model, inputs, encoding == "base64", dimensions)


class Embeddings:
    """The endpoint: validation, the model, the gate, the wait, the body."""

    def __init__(self, api: OpenAI, gate: Gate, stats: Stats) -> None:
        self.api = api
        self.core = api.core
        self.clock = api.clock
        self.limits: InputLimits = api.limits
        self.gate = gate
        self.stats = stats
        self.embedder = Embedder(api.core.settings.answers.corpus_seed)
        #: Jitter of the latency model's time to first token.
        self.rng = np.random.default_rng()

    def model(self, name: str) -> ServedModel:
        """
        The model, or OpenAI's error: 404 for an unknown one, 403 for one
        that does not embed (any name embeds under ``--any-model``).
        """
        core = self.core
        served = core.model(name)
        if served is None:
            raise errors.model_not_found(name)
        if not core.serves(served, EMBEDDINGS) and name in core.models:
            raise not_an_embedding_model()
        return served

    def create(self, request: Request) -> bytes | Deferred[bytes]:
        content_type = request.getHeader(b"content-type")
        if content_type is not None and not _is_json(content_type):
            raise errors.unsupported_content_type(content_type.decode("latin-1"))
        limits = self.limits
        wanted = parse(validate.parse_body(request.content.read(), limits.max_json_depth), limits)
        served = self.model(wanted.model)
        spec = served.spec
        dimensions = wanted.dimensions
        if dimensions is not None:
            if not spec.custom_dimensions:
                raise fixed_dimensions()
            if dimensions > spec.dimensions:
                raise errors.above_max("dimensions", spec.dimensions, dimensions)
        counts = [
            tokens.count_text(item) if type(item) is str else len(item) for item in wanted.inputs
        ]
        limit = spec.context_length
        for count in counts:
            if count > limit:
                raise input_too_long(limit, count)
        prompt_tokens = sum(counts)
        if prompt_tokens > MAX_REQUEST_TOKENS:
            raise request_too_large(prompt_tokens)
        outcome = attach(request, self.stats.for_model(spec.id), spec.id, False, prompt_tokens)
        outcome.arrived()
        try:
            self.gate.charge_prompt(request, prompt_tokens, served)
            generation = GenerationRequest(EMBEDDINGS, spec.id, prompt_tokens)
            plan = embeddings.prefill(generation, served.profile, self.rng)
            arrived = self.clock.seconds()

            def render() -> bytes:
                elapsed = self.clock.seconds() - arrived
                request.setHeader(b"openai-processing-ms", b"%d" % round(elapsed * 1000))
                return self.body(wanted, served, prompt_tokens)

            request.setHeader(b"Content-Type", JSON)
            return after_tokens(served.engine, served.pacer, plan, 1, render, outcome)
        except APIError as e:
            outcome.refused(e.status)
            raise

    def body(self, wanted: EmbeddingRequest, served: ServedModel, prompt_tokens: int) -> bytes:
        """The list of embeddings, in the order of the inputs."""
        spec = served.spec
        inputs = [embeddings.input_bytes(item) for item in wanted.inputs]
        vectors = self.embedder.vectors(wanted.model, inputs, spec.dimensions, wanted.dimensions)
        if wanted.base64:
            rendered = [
                b'"' + base64.b64encode(data) + b'"' for data in embeddings.little_endian(vectors)
            ]
        else:
            rendered = embeddings.floats(vectors)
        pieces = [b'{"object":"list","data":[']
        for index, vector in enumerate(rendered):
            if index:
                pieces.append(b",")
            pieces += (b'{"object":"embedding","index":%d,"embedding":' % index, vector, b"}")
        pieces += (
            b'],"model":',
            dumps(wanted.model),
            b',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (prompt_tokens, prompt_tokens),
        )
        return b"".join(pieces)
