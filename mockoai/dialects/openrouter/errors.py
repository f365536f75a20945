# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter's error envelope, ``{"error": {"code": <status>, "message",
"metadata"}}``, and the errors only OpenRouter mode raises.

Every L{APIError} raised under ``/api/v1/`` (validation, engine refusals,
unknown URLs) is sent in this envelope by L{body}; L{RouterError} adds the
``metadata`` OpenRouter attaches to provider, moderation and routing errors.
"""

from __future__ import annotations

from typing import Any

from mockoai.pipeline.errors import SERVER_ERROR, APIError
from mockoai.pipeline.media import dumps

#: Paths answered in OpenRouter's dialect (errors included).
PREFIX = b"/api/v1/"


class RouterError(APIError):
    """An error with OpenRouter's ``metadata``."""

    def __init__(
        self,
        status: int,
        message: str,
        metadata: dict[str, Any] | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(status, message, type=SERVER_ERROR, headers=headers)
        self.metadata = metadata

    def body(self) -> bytes:
        return body(self)


def body(error: APIError) -> bytes:
    """``error`` in OpenRouter's envelope (``metadata`` only when there is some)."""
    payload: dict[str, Any] = {"code": error.status, "message": error.message}
    metadata = getattr(error, "metadata", None)
    if metadata:
        payload["metadata"] = metadata
    return dumps({"error": payload})


def no_credentials() -> RouterError:
    return RouterError(401, "No auth credentials found")


def user_not_found() -> RouterError:
    """OpenRouter's 401 for a key it does not know."""
    return RouterError(401, "User not found.")


def invalid(message: str) -> RouterError:
    return RouterError(400, message)


def invalid_model(model: str) -> RouterError:
    return RouterError(400, f"{model} is not a valid model ID")


def context_too_long(model: str, limit: int, prompt: int, output: int) -> RouterError:
    return RouterError(
        400,
        f"This endpoint's maximum context length is {limit} tokens. However, you requested "
        f"about {prompt + output} tokens ({prompt} of text input, {output} in the output). "
        'Please reduce the length of either one, or use the "middle-out" transform to '
        "compress your prompt automatically.",
        {"model": model},
    )


def reasoning_too_large(model: str, tokens: int, limit: int) -> RouterError:
    """A thinking budget over what the model may output (reasoning tokens are output tokens)."""
    return RouterError(
        400,
        f"reasoning.max_tokens is too large: {tokens}. {model} supports at most {limit} "
        f"completion tokens, reasoning included, whereas you provided {tokens}.",
        {"model": model},
    )


def out_of_credits(limit: float, usage: float) -> RouterError:
    return RouterError(
        402,
        f"This API key has spent its credit limit: ${usage:.6f} of ${limit:.6f}. "
        "Raise --openrouter-credit-limit or use another key.",
        {"limit": limit, "usage": usage},
    )


def no_provider(model: str, available: list[str]) -> RouterError:
    return RouterError(
        503,
        f"No available model provider meets your routing requirements for {model}.",
        {"model": model, "available_providers": available},
    )


#: What each upstream failure says in ``metadata.raw``.
_RAW = {
    408: "upstream request timed out",
    429: "{model} is temporarily rate-limited upstream. Please retry shortly.",
    502: "upstream connection failed",
    503: "{model} is overloaded upstream",
}


def upstream(status: int, model: str, provider: str, flagged: str = "") -> RouterError:
    """A provider's failure before the first token (a configured failing model)."""
    if status == 403:
        text = flagged if len(flagged) <= 100 else f"{flagged[:48]}...{flagged[-48:]}"
        return RouterError(
            403,
            f"{model} requires moderation on {provider}. Your input was flagged.",
            {
                "reasons": ["simulated"],
                "flagged_input": text,
                "provider_name": provider,
                "model_slug": model,
            },
        )
    headers = ((b"Retry-After", b"1"),) if status in (429, 503) else ()
    return RouterError(
        status,
        "Provider returned error",
        {"raw": _RAW[status].format(model=model), "provider_name": provider},
        headers,
    )


def mid_stream(model: str, provider: str) -> RouterError:
    """A provider that fails after tokens were sent (the status line is long gone)."""
    return RouterError(
        502,
        "Provider disconnected unexpectedly",
        {"raw": "upstream stream closed mid-generation", "provider_name": provider},
    )


def generation_not_found(generation_id: str) -> RouterError:
    return RouterError(404, f"Generation {generation_id} not found")


def embedding_model(model: str, endpoint: str) -> RouterError:
    """An embedding model asked to generate."""
    return RouterError(
        400,
        f"{model} is an embedding model and cannot be used with the {endpoint} endpoint. "
        "Use the /embeddings endpoint instead.",
    )


def model_not_found(model: str) -> RouterError:
    return RouterError(404, f"Model {model} not found")
