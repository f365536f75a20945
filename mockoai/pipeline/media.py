# -*- test-case-name: tests.test_routes -*-
"""
The media types of every answer, the one JSON encoder of the templates
and bodies rendered at startup (model lists, cards, catalogs, the constant
parts of each model's templates), and the JSON decoder of request bodies.

On CPython they are ujson's; on PyPy the standard library's, which PyPy
compiles: ujson is a C extension that PyPy runs through its C-API
emulation (cpyext), where a chat request's body takes 20 us to decode and
an answer 88 us to encode, against 1.4 and 3.3 us for PyPy's json.  (On
CPython ujson is the faster: 3.9 and 5.3 us against 7.1 and 15.)
"""

from __future__ import annotations

import json
import platform
from typing import Any

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
    if _PYPY:
        return _ENCODER.encode(value).encode("utf-8", "replace")
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode(
        "utf-8", "replace"
    )


def loads(body: bytes) -> Any:
    """
    The JSON value in ``body`` (UTF-8): C{ValueError} if it is not JSON,
    C{OverflowError} or C{RecursionError} for what a decoder will not hold.
    UTF-8 spellings of lone surrogates decode to them, as ujson's do, so
    the validators can name the field that holds one.
    """
    if _PYPY:
        text = body.decode("utf-8", "surrogatepass")
        try:
            return json.loads(text)  # PyPy's fast path: no decoder options
        except ValueError as e:
            # Raw control characters in strings, which ujson takes: so do we.
            if "control character" not in str(e):
                raise
            return _LENIENT.decode(text)
    return ujson.loads(body)


_PYPY = platform.python_implementation() == "PyPy"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_LENIENT = json.JSONDecoder(strict=False)
