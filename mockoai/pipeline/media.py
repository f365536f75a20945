# -*- test-case-name: tests.test_routes -*-
"""
The media types of every answer, and the one JSON encoder of the
templates and bodies rendered at startup (model lists, cards, catalogs,
the constant parts of each model's templates).
"""

from __future__ import annotations

import ujson

#: A plain answer, an error, any other JSON body.
JSON = b"application/json"
#: A streamed answer, as OpenAI and OpenRouter send it.
EVENT_STREAM = b"text/event-stream; charset=utf-8"


def dumps(value: object) -> bytes:
    """
    ``value`` as UTF-8 JSON the way OpenAI writes it: no ASCII escapes, no
    ``\\/``.  A lone surrogate a client sent (a ``"\\udcff"`` escape in a
    title or a user id) becomes ``?``: rendering must never fail.
    """
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode(
        "utf-8", "replace"
    )
