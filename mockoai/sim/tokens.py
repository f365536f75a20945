# -*- test-case-name: tests.test_tokens -*-
"""
What a token is, defined once.

A token is a run of word characters (at most 16 of them) or a single
punctuation mark, together with the whitespace before it.  The generated
corpus is built out of exactly such tokens, so a text we produced, sent back
as a prompt, is counted as the same number of tokens we reported for it.
Longer words count one token per 16 characters, so base64 blobs and long
identifiers still grow the count roughly the way a BPE tokenizer's does.

Prompt counting follows OpenAI's published recipe for chat models: every
message costs 3 tokens of framing plus the tokens of each of its string
fields (1 more when it has a ``name``), and every reply is primed with 3.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable

TOKEN = re.compile(r"\s*(?:\w{1,16}|[^\w\s])")

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
#: What an image part costs: OpenAI's fixed price of a low-detail image.
IMAGE_TOKENS = 85


def _ascii_classes() -> bytes:
    """Each ASCII character as TOKEN sees it: ``a`` word, space, ``.`` a mark of its own."""
    classes = bytearray(b" " * 256)
    for code in range(128):
        char = chr(code)
        if re.fullmatch(r"\w", char):
            classes[code] = ord("a")
        elif not re.fullmatch(r"\s", char):
            classes[code] = ord(".")
    return bytes(classes)


_CLASSES = _ascii_classes()
_LONG_WORD = b"a" * 17


def _count_in_c(text: str) -> int:
    """
    ``len(TOKEN.findall(text))``, ASCII text counted by bytes methods.

    The regex spends ~25 ns per character, which made counting a prompt of
    a few hundred characters a sixth of a non-streaming request's CPU.
    """
    try:
        raw = text.encode("ascii")  # cheaper than asking isascii() first
    except UnicodeEncodeError:
        return len(TOKEN.findall(text))
    classes = raw.translate(_CLASSES)
    # A mark becomes a one-letter word of its own, so one count finds every
    # token that begins a word or is a mark.  (find, not ``in``: a bytes
    # ``in`` first tries its operand as an integer, and pays for the error.)
    spaced = b" " + classes.replace(b".", b" a ")
    tokens = spaced.count(b" a")
    if classes.find(_LONG_WORD) != -1:
        # \w{1,16}: a longer word counts once per 16 characters begun.
        tokens += sum((len(word) - 1) // 16 for word in spaced.split())
    return tokens


def _count_in_a_loop(text: str) -> int:
    """
    ``len(TOKEN.findall(text))``, ASCII text counted a byte at a time: PyPy
    compiles this loop to half the time its bytes methods take (~2.8 ns a
    character against 5.6); on CPython it is over ten times slower.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return len(TOKEN.findall(text))
    classes = _CLASSES
    tokens = run = 0
    for byte in raw:
        kind = classes[byte]
        if kind == _WORD:
            if run & 15 == 0:  # \w{1,16}: every 16th character begins a token
                tokens += 1
            run += 1
        else:
            run = 0
            if kind == _MARK:
                tokens += 1
    return tokens


_WORD, _MARK = ord("a"), ord(".")

#: Tokens in one piece of text: ``len(TOKEN.findall(text))``.
count_text = _count_in_a_loop if platform.python_implementation() == "PyPy" else _count_in_c


def count_value(value: object) -> int:
    """Tokens in a JSON value: strings counted as text, containers walked."""
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, dict):
        return sum(count_value(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_value(v) for v in value)
    if value is None or isinstance(value, bool):
        return 0
    return 1


def count_content(content: object) -> int:
    """A message's ``content``: a string, or a list of typed parts."""
    if isinstance(content, str):
        return count_text(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text" or kind == "refusal":
                    total += count_value(part.get("text", part.get("refusal")))
                elif kind in ("image_url", "input_image"):
                    total += IMAGE_TOKENS
                else:
                    total += count_value(part)
            else:
                total += count_value(part)
        return total
    return count_value(content)


def count_messages(messages: Iterable[dict[str, object]]) -> int:
    """
    Prompt tokens of a chat request's ``messages``.

    Every string field is text (what L{count_content} and L{count_value}
    make of one), counted here without their call; a role, nearly always
    one of a few words, is looked up rather than counted.
    """
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if type(value) is not str:
                total += count_content(value) if key == "content" else count_value(value)
            elif key == "role" and value in _ROLE_TOKENS:
                total += _ROLE_TOKENS[value]
            else:
                total += count_text(value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


#: The tokens of each chat role's name, counted once.
_ROLE_TOKENS = {
    role: count_text(role)
    for role in ("system", "developer", "user", "assistant", "tool", "function")
}


def count_prompt(prompt: object) -> int:
    """
    Prompt tokens of one legacy completions prompt: text is counted, a list
    of token ids is taken at its length.
    """
    if isinstance(prompt, str):
        return count_text(prompt)
    if isinstance(prompt, list):
        return len(prompt)
    return 0
