# -*- test-case-name: tests.test_h1parser -*-
"""
An HTTP/1.1 request parser in pure Python, for the lean channel where
httptools (llhttp, in C) cannot be installed: PyPy.

It has httptools' C{HttpRequestParser} surface -- the same callbacks
(C{on_message_begin}, C{on_url}, C{on_header}, C{on_headers_complete},
C{on_body}, C{on_message_complete}), the same queries and the same errors
(a callback's exception is the C{__context__} of an L{HttpParserError}; an
upgrade or CONNECT stops at the end of its head with
L{HttpParserUpgrade}(offset)) -- so L{mockoai.wire.http11} drives either
one, and it accepts and refuses what llhttp does in its strict mode (checked
against httptools byte for byte, split at every offset, in
C{tests.test_h1parser}).  Where llhttp is lenient against RFC 9112 it
follows the RFC: trailing whitespace is not part of a field value, and
HTTP/1.0's C{Connection: keep-alive, close} closes.

h11, the well-kept pure-Python parser, costs ~35 us a request under PyPy
(an event object per step, a state machine that wants the response sent
through it); this one ~1.5 us, about what twisted.web's whole channel costs
per header line.  What keeps it cheap under PyPy's JIT and CPython alike:
a head that arrives in one read (nearly all of them) is parsed in place
with C{bytes.find} and slices, one regex scan per line for control bytes,
and header names validated once (a small cache of the lowercased names).
Only a line split over reads is held, in a C{bytearray} that grows in
amortised constant time, so a head trickled a byte at a time costs linear
work (its size is bounded by the channel, L{mockoai.wire.guard}).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

__all__ = ["HttpParserCallbackError", "HttpParserError", "HttpParserUpgrade", "HttpRequestParser"]


class HttpParserError(Exception):
    """Malformed input: the connection gets a 400 and is closed."""


class HttpParserCallbackError(HttpParserError):
    """A callback raised: its exception is this one's C{__context__}."""


class HttpParserUpgrade(HttpParserError):  # noqa: N818 (httptools' name)
    """An upgrade's (or CONNECT's) head is in: C{args[0]} is where its own bytes begin."""


#: Request methods llhttp knows (HTTP, WebDAV, CalDAV...); PRI is HTTP/2's preface.
_METHODS = {
    m: m
    for m in (
        b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
        b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
        b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY"
    ).split()
}
#: What a request line can begin with, before its first space.
_METHOD_STARTS = {m[:i] for m in _METHODS for i in range(1, len(m) + 1)}
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
#: Bytes no line of a head may hold (HTAB is fine in a value; CR and LF end lines).
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request-target: visible ASCII; origin-form, asterisk-form or absolute-form.
_TARGET = re.compile(rb"(?:/|\*$|[A-Za-z][A-Za-z0-9+.\-]*://)[\x21-\x7e]*")
_AUTHORITY = re.compile(rb"[\x21-\x7e]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_LIMIT = 1 << 64
#: Lowercased header names already checked; bounded, so random names cannot grow it.
_NAMES: dict[bytes, bytes] = {}
_NAMES_MAX = 512
#: Longest chunk-size or trailer line held (llhttp has no limit; we want one).
_MAX_LINE = 16 * 1024

# States (ints: the JIT compares them cheaply).
_START, _LINE, _FIELDS, _BODY, _SIZE, _CHUNK, _CHUNK_END, _TRAILERS, _CLOSED, _OVER = range(10)
# What the fields the parser reads itself are (by lowercased name).
_LENGTH, _ENCODING, _CONNECTION, _UPGRADE = range(4)
_FRAMING = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
}


def _name(name: bytes) -> bytes:
    """``name`` lowercased, once it is known to be a token."""
    key = _NAMES.get(name)
    if key is None:
        if _TOKEN.fullmatch(name) is None:
            raise HttpParserError("Invalid header token")
        key = name.lower()
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = key
    return key


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip(b" \t").lower() for token in value.split(b",")]


class HttpRequestParser:
    """Parses a connection's requests, one after another, calling back ``protocol``."""

    __slots__ = (
        "_body_left",
        "_chunked",
        "_close",
        "_encodings",
        "_error",
        "_held",
        "_keep",
        "_length",
        "_method",
        "_on_begin",
        "_on_body",
        "_on_complete",
        "_on_header",
        "_on_headers",
        "_on_url",
        "_state",
        "_upgrade",
        "_upgrade_asked",
        "_upgrade_named",
        "_url_sent",
        "_version",
    )

    def __init__(self, protocol: Any) -> None:
        # Bound once: the channel breaks the cycle this makes when it goes.
        self._on_begin = getattr(protocol, "on_message_begin", None)
        self._on_url = getattr(protocol, "on_url", None)
        self._on_header = getattr(protocol, "on_header", None)
        self._on_headers = getattr(protocol, "on_headers_complete", None)
        self._on_body = getattr(protocol, "on_body", None)
        self._on_complete = getattr(protocol, "on_message_complete", None)
        self._state = _START
        self._held = bytearray()
        self._error: str | None = None
        self._method = b""
        self._version = "0.0"
        self._url_sent = 0
        self._reset()

    def _reset(self) -> None:
        self._length = -1
        self._encodings: list[bytes] | None = None
        self._chunked = False
        self._close = False
        self._keep = False
        self._upgrade = False
        self._upgrade_named = False  # an Upgrade field
        self._upgrade_asked = False  # Connection: upgrade
        self._body_left = 0

    # --- what httptools' parser answers ---

    def get_method(self) -> bytes:
        return self._method

    def get_http_version(self) -> str:
        return self._version

    def should_keep_alive(self) -> bool:
        if self._close:
            return False
        return self._keep or self._version == "1.1"

    def should_upgrade(self) -> bool:
        return self._upgrade

    # --- parsing ---

    def feed_data(self, data: bytes) -> None:
        if self._error is not None:
            raise HttpParserError(self._error)
        try:
            held = self._held
            if not held:
                self._parse(data, 0)
            elif b"\n" not in data:
                # A line split over reads: copied only once its end (a LF) is in.
                held += data
                self._held_more()
            else:
                held += data
                buf = bytes(held)
                del held[:]
                self._parse(buf, len(buf) - len(data))
        except HttpParserUpgrade:
            raise
        except HttpParserError as e:
            self._error = str(e)
            raise
        except Exception as e:
            self._error = "callback error"
            raise HttpParserCallbackError(f"callback error: {type(e).__name__}") from e

    def _fail(self, message: str) -> NoReturn:
        self._error = message
        raise HttpParserError(message)

    def _parse(self, buf: bytes, base: int) -> None:
        end = len(buf)
        pos = 0
        while pos < end:
            state = self._state
            if state in (_START, _CLOSED):
                # Empty lines before a request are skipped (RFC 9112 2.2).
                byte = buf[pos]
                if byte == 13 or byte == 10:
                    pos += 1
                    continue
                if state == _CLOSED:
                    # A request after one that closes: refused, as llhttp does (and
                    # so answered in its turn, after the answers before it).
                    self._fail("Data after `Connection: close`")
                self._state = _LINE
                self._url_sent = 0
                self._method = b""
                self._version = "0.0"
                if self._on_begin is not None:
                    self._on_begin()
            elif state in (_LINE, _FIELDS, _TRAILERS):
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    self._hold(buf, pos)
                    return
                if state == _LINE:
                    self._request_line(buf, pos, eol)
                    pos = eol + 2
                elif eol > pos:
                    self._field(buf, pos, eol, state == _FIELDS)
                    pos = eol + 2
                elif state == _FIELDS:
                    pos = self._head_done(eol + 2, base)
                else:
                    pos = eol + 2
                    self._complete()
            elif state == _BODY:
                left = self._body_left
                if end - pos <= left:
                    piece = buf if pos == 0 else buf[pos:]
                    left -= end - pos
                    pos = end
                else:
                    piece = buf[pos : pos + left]
                    pos += left
                    left = 0
                self._body_left = left
                if self._on_body is not None:
                    self._on_body(piece)
                if not left:
                    self._complete()
            elif state == _SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    self._hold(buf, pos)
                    return
                self._chunk_size(buf, pos, eol)
                pos = eol + 2
            elif state == _CHUNK:
                left = self._body_left
                take = min(left, end - pos)
                piece = buf[pos : pos + take]
                pos += take
                self._body_left = left - take
                if left == take:
                    self._state = _CHUNK_END
                if self._on_body is not None:
                    self._on_body(piece)
            elif state == _CHUNK_END:
                if end - pos < 2:
                    if buf[pos] != 13:
                        self._fail("Expected LF after chunk data")
                    self._hold(buf, pos)
                    return
                if buf[pos] != 13 or buf[pos + 1] != 10:
                    self._fail("Expected LF after chunk data")
                pos += 2
                self._state = _SIZE
            else:
                self._fail("Data after an upgrade")

    def _hold(self, buf: bytes, pos: int) -> None:
        """Keep an unfinished line for the next read."""
        if buf.find(b"\n", pos) >= 0:
            self._fail("Expected CRLF")  # a bare LF ends no line here (llhttp's strict mode)
        self._held += buf[pos:] if pos else buf
        self._held_more()

    def _held_more(self) -> None:
        state = self._state
        held = self._held
        if state == _LINE:
            self._partial_url(held)
        elif state != _FIELDS and len(held) > _MAX_LINE:
            # (A head's size is the channel's to bound: it knows the limits.)
            self._fail("Line too long")
        elif state == _CHUNK_END:
            if held[:2] != b"\r\n"[: len(held)]:
                self._fail("Expected LF after chunk data")
        elif state == _SIZE:
            # A size that cannot become one is refused at once, as llhttp does.
            semi = held.find(b";")
            digits = held if semi < 0 else held[:semi]
            if digits[-1:] == b"\r":
                digits = digits[:-1]
            if digits and (_HEX.fullmatch(digits) is None or len(digits.lstrip(b"0")) > 16):
                self._fail("Invalid character in chunk size")

    def _partial_url(self, line: bytearray) -> None:
        """
        Pass on what has come of a request-target whose line is not in yet,
        as llhttp does, so the channel can refuse a long one (414) at once.
        """
        space = line.find(b" ")
        if space < 0:
            if bytes(line) not in _METHOD_STARTS:
                self._fail("Invalid method encountered")
            return
        if bytes(line[:space]) not in _METHODS:
            self._fail("Invalid method encountered")
        start = space + 1
        while start < len(line) and line[start] == 32:
            start += 1
        if line.find(b" ", start) >= 0:
            return  # the target is whole: passed on with the line
        piece = bytes(line[start + self._url_sent :])
        if not piece:
            return
        if _AUTHORITY.fullmatch(piece) is None:
            self._fail("Invalid characters in url")
        self._url_sent += len(piece)
        if self._on_url is not None:
            self._on_url(piece)

    def _request_line(self, buf: bytes, pos: int, eol: int) -> None:
        space = buf.find(b" ", pos, eol)
        method = _METHODS.get(buf[pos:space] if space > pos else b"")
        if method is None:
            self._fail("Invalid method encountered")
        start = space + 1
        while start < eol and buf[start] == 32:
            start += 1  # llhttp takes several spaces here
        stop = buf.find(b" ", start, eol)
        if stop < 0:
            self._fail("Expected HTTP/ (HTTP/0.9 is not served)")
        at = stop + 1
        while at < eol and buf[at] == 32:
            at += 1
        version = _VERSIONS.get(buf[at:eol])
        if version is None:
            self._fail("Invalid HTTP version")
        target = buf[start:stop]
        if method == b"CONNECT":
            valid = _AUTHORITY.fullmatch(target) is not None
        else:
            valid = _TARGET.fullmatch(target) is not None
        if not valid:
            self._fail("Invalid characters in url")
        self._method = method
        self._version = version
        self._state = _FIELDS
        sent = self._url_sent
        if self._on_url is not None:
            self._on_url(target[sent:] if sent else target)

    def _field(self, buf: bytes, pos: int, eol: int, head: bool) -> None:
        """One field line: checked, then passed on (a trailer's too, as llhttp does)."""
        colon = buf.find(b":", pos, eol)
        if colon <= pos:
            self._fail("Invalid header token")
        if _CTL.search(buf, colon, eol) is not None:
            self._fail("Invalid header value char")
        name = buf[pos:colon]
        key = _name(name)
        start = colon + 1
        stop = eol
        while start < stop and (buf[start] == 32 or buf[start] == 9):
            start += 1
        while stop > start and (buf[stop - 1] == 32 or buf[stop - 1] == 9):
            stop -= 1
        value = buf[start:stop]
        if head:
            kind = _FRAMING.get(key)
            if kind is not None:
                self._framing(kind, value)
        if self._on_header is not None:
            self._on_header(name, value)

    def _framing(self, kind: int, value: bytes) -> None:
        if kind == _LENGTH:
            if self._length >= 0:
                self._fail("Duplicate Content-Length")
            if self._encodings is not None:
                self._fail("Content-Length can't be present with Transfer-Encoding")
            if not value:
                self._fail("Empty Content-Length")
            if not value.isdigit():
                self._fail("Invalid character in Content-Length")
            length = int(value)
            if length >= _LIMIT:
                self._fail("Content-Length overflow")
            self._length = length
        elif kind == _ENCODING:
            if self._length >= 0:
                self._fail("Transfer-Encoding can't be present with Content-Length")
            if not value:
                self._fail("Empty Transfer-Encoding")
            encodings = self._encodings
            if encodings is None:
                encodings = self._encodings = []
            for coding in _tokens(value):
                if not coding or self._chunked:  # chunked must come last, once
                    self._fail("Invalid `Transfer-Encoding` header value")
                self._chunked = coding == b"chunked"
                encodings.append(coding)
        elif kind == _CONNECTION:
            for token in _tokens(value):
                if token == b"close":
                    self._close = True
                elif token == b"keep-alive":
                    self._keep = True
                elif token == b"upgrade":
                    self._upgrade_asked = True
        else:
            self._upgrade_named = True

    def _head_done(self, pos: int, base: int) -> int:
        """The head is in: frame the body, or stop at an upgrade."""
        self._upgrade = (self._upgrade_named and self._upgrade_asked) or self._method == b"CONNECT"
        if self._on_headers is not None:
            self._on_headers()
        if self._upgrade:
            self._state = _OVER
            self._error = "Data after an upgrade"
            if self._on_complete is not None:
                self._on_complete()
            raise HttpParserUpgrade(pos - base)
        if self._encodings is not None and not self._chunked:
            self._fail("Request has invalid `Transfer-Encoding`")
        if self._chunked:
            self._state = _SIZE
        elif self._length > 0:
            self._state = _BODY
            self._body_left = self._length
        else:
            self._complete()
        return pos

    def _chunk_size(self, buf: bytes, pos: int, eol: int) -> None:
        semi = buf.find(b";", pos, eol)
        stop = eol if semi < 0 else semi
        digits = buf[pos:stop]
        if _HEX.fullmatch(digits) is None:
            self._fail("Invalid character in chunk size")
        if semi >= 0 and _CTL.search(buf, semi, eol) is not None:
            self._fail("Invalid character in chunk extensions")
        size = int(digits, 16)
        if size >= _LIMIT:
            self._fail("Chunk size overflow")
        if size:
            self._state = _CHUNK
            self._body_left = size
        else:
            self._state = _TRAILERS

    def _complete(self) -> None:
        self._state = _START if self.should_keep_alive() else _CLOSED
        self._reset()
        if self._on_complete is not None:
            self._on_complete()
