# -*- test-case-name: tests.test_journal -*-
"""
The journal: the last N requests (``--journal-size``), with their timings,
the rule that matched, the fault applied and how they ended, for
``GET /_mockoai/journal`` and the verdict on each client
(L{mockoai.ops.verdict}).

It is one more sink of the finish hook (L{mockoai.ops.observe.Observer}),
kept while rules or control headers are in force (``--journal auto``, the
default), always (``on``) or never (``off``); off, the hook does not call
it, so a request pays nothing.  A finished request costs a tuple of what
its record already has (and, with ``--journal-bodies``, the first bytes of
its body) appended to a bounded ring; formatting waits for a reader.  With
``--workers`` each worker keeps its own ring, and the reader's worker
merges its siblings' (L{mockoai.ops.admin}).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mockoai.ops.requestlog import mask
from mockoai.pipeline.auth import presented_key
from mockoai.pipeline.limits import client_ip

if TYPE_CHECKING:
    from mockoai.interfaces import Clock
    from mockoai.pipeline.outcome import Outcome

#: How a request ended, as the journal says it.
ANSWERED = "answered"
ERROR = "error"
ABANDONED = "abandoned"

Entry = tuple[Any, ...]
#: mockoai's own paths (the admin API, the dashboard): not the clients' requests.
OWN = b"/_mockoai/"


def _address(request: Any) -> str:
    try:
        address = request.getClientAddress()
    except Exception:  # the transport is gone
        return "unknown"
    return client_ip(address) or str(address)


class _Headers:
    """Headers by name, as L{presented_key} reads them."""

    __slots__ = ("getHeader",)

    def __init__(self, get: Callable[[bytes], bytes | None]) -> None:
        self.getHeader = get


def response_header(request: Any, name: bytes) -> bytes | None:
    """A response header, on either HTTP stack."""
    get = getattr(request, "getResponseHeader", None)
    if get is not None:
        value: bytes | None = get(name)
        return value
    headers = getattr(request, "responseHeaders", None)
    values = None if headers is None else headers.getRawHeaders(name)
    return values[-1] if values else None


def _body(request: Any, keep: int) -> tuple[int, bytes | None]:
    """A checksum of the body and its first ``keep`` bytes (None: none kept), uncopied if it can."""
    content = getattr(request, "content", None)
    if content is None:
        return 0, None
    getbuffer = getattr(content, "getbuffer", None)
    try:
        if getbuffer is not None:  # a BytesIO: read in place
            with getbuffer() as view:
                return zlib.crc32(view), bytes(view[:keep]) if keep else None
        content.seek(0)
        data: bytes = content.read()
    except (OSError, ValueError):
        return 0, None
    return zlib.crc32(data), data[:keep] if keep else None


class Journal:
    """The ring of the last requests, and how to read it."""

    def __init__(self, clock: Clock, size: int = 1000, bodies: int = 0, worker: int = 0) -> None:
        self.clock = clock
        self.size = size
        self.bodies = bodies
        self.worker = worker
        self.ring: deque[Entry] = deque(maxlen=size)

    def add(self, request: Any, status: int, endpoint: str, outcome: Outcome | None) -> None:
        """A request ended: keep what it knows (the finish hook's sink), not mockoai's own."""
        if request.path.startswith(OWN):
            return
        crc, body = _body(request, self.bodies) if request.method == b"POST" else (0, None)
        # Who sent it is worked out when the journal is read: here, only what the
        # request will not have then (its headers' list, its label, its address).
        headers: Any = getattr(request, "raw_headers", None)  # the lean stack's list, as is
        if headers is None:
            headers = [(n, v) for n in _READ if (v := request.getHeader(n)) is not None]
        elif outcome is not None and outcome.decision is not None:
            # The rules made it a table already (a dict's lookup: nothing of the request's).
            headers = outcome.decision.headers or headers
        label = getattr(request, "key_label", None)
        keyed = label is not None or (callable(headers) and presented_key(_Headers(headers)))
        self.ring.append(
            (
                self.clock.seconds(),
                response_header(request, b"x-request-id") or b"",
                label,
                None if keyed else _address(request),  # a key says who it is
                headers,
                request.method,
                endpoint,
                status,
                outcome,
                response_header(request, b"retry-after") if status >= 400 else None,
                crc,
                body,
            )
        )

    def clear(self) -> None:
        self.ring.clear()

    def entries(self) -> list[dict[str, Any]]:
        """The ring, oldest first, as JSON-able records."""
        return [self._record(entry) for entry in self.ring]

    def _record(self, entry: Entry) -> dict[str, Any]:
        at, rid, label, address, headers, method, endpoint, status, outcome = entry[:9]
        retry_after, crc, body = entry[9:]
        get = headers if callable(headers) else _table(headers)
        retry = get(b"x-stainless-retry-count")
        key = None if label else presented_key(_Headers(get))
        # Who sent it: its key's label, else its key (masked), else its address.
        if label:
            client = f"key {label}"
        elif key is not None:
            client = f"key {mask(key.decode('latin-1'))}"
        else:
            client = address or "unknown"
        record: dict[str, Any] = {
            "time": at,
            "arrived": at,
            "worker": self.worker,
            "id": rid.decode("latin-1"),
            "client": client,
            "method": method.decode("latin-1"),
            "endpoint": endpoint,
            "status": status,
            "model": None,
            "stream": None,
            "ttft_ms": None,
            "e2e_ms": None,
            "completion_tokens": None,
            "finish_reason": None,
            "error": None,
            "rule": None,
            "fault": None,
            "retry": int(retry) if retry is not None and retry.isdigit() else None,
            "retry_after": _seconds(retry_after),
            "body_crc": crc,
            "outcome": ERROR if status >= 400 else ANSWERED,
        }
        if status == 499:
            record["outcome"] = ABANDONED
        if outcome is not None:
            record.update(
                model=outcome.model or None,
                stream=outcome.stream,
                ttft_ms=_ms(outcome.ttft),
                e2e_ms=_ms(outcome.e2e),
                completion_tokens=outcome.completion_tokens,
                finish_reason=outcome.finish_reason,
                error=outcome.error,
            )
            if outcome.cancelled:
                record["outcome"] = ABANDONED
            decision = outcome.decision
            if decision is not None:
                record["arrived"] = decision.arrived
                record["rule"] = decision.rule
                record["fault"] = ",".join(decision.actions) or None
            elif outcome.e2e is not None:
                record["arrived"] = at - outcome.e2e
        if body is not None:
            record["body"] = body.decode("utf-8", "replace")
        return record


#: The headers the journal reads, kept from a request without the lean stack's list.
_READ = (b"authorization", b"api-key", b"x-api-key", b"x-stainless-retry-count")


def _table(pairs: list[tuple[bytes, bytes]]) -> Callable[[bytes], bytes | None]:
    table: dict[bytes, bytes] = {}
    for name, value in pairs:
        table.setdefault(name.lower(), value)
    return table.get


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _seconds(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def merged(lists: list[list[dict[str, Any]]], limit: int | None = None) -> list[dict[str, Any]]:
    """Several workers' journals as one, by time (the last ``limit`` of them)."""
    entries = sorted((e for entries in lists for e in entries), key=lambda e: e["time"])
    return entries[-limit:] if limit else entries
