# -*- test-case-name: tests.test_requestlog -*-
"""
``--request-log PATH``: one JSON line per request, rotated by size.

Off the hot path: a finished request appends a tuple of what it already
has (no formatting, no I/O) to a list; a reactor timer formats and writes
the list once a second (or sooner past L{FLUSH_LINES}), and shutdown
flushes the rest.  Files are Twisted's L{LogFile}: rotated when a write
would find the file at ``--request-log-max-size``, keeping
``--request-log-files`` old ones as PATH.1 (newest) .. PATH.N.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import ujson
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.logfile import LogFile

from mockoai.pipeline.outcome import Outcome

if TYPE_CHECKING:
    from mockoai.interfaces import Clock

#: Seconds between flushes.
FLUSH_INTERVAL = 1.0
#: Lines buffered before a flush without waiting for the timer.
FLUSH_LINES = 4096

_log = Logger(namespace="mockoai")


def key_label(request: Any) -> str:
    """
    The label of the request's API key, for the log: THE hook for labelled
    keys (mockoai/pipeline/auth.py).  Until keys have labels it is the bearer key
    masked as OpenAI shows keys (``sk-...abcd``), or empty without one.
    """
    header = request.getHeader(b"authorization")
    if not header:
        return ""
    scheme, _, key = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return ""
    return mask(key.strip().decode("latin-1"))


def mask(key: str) -> str:
    """``sk-proj-abc...wxyz`` -> ``sk-...wxyz``: the prefix to its first dash, the last 4."""
    if not key:
        return ""
    if len(key) < 12:
        return "..." + key[-2:]
    dash = key.find("-", 0, 8)
    return key[: dash + 1 if dash > 0 else 2] + "..." + key[-4:]


def _client(request: Any) -> str:
    try:
        address = request.getClientAddress()
    except Exception:  # the transport is gone
        return ""
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else str(address or "")


def _request_id(request: Any) -> bytes:
    get = getattr(request, "getResponseHeader", None)
    if get is not None:
        value = get(b"x-request-id")
    else:
        values = request.responseHeaders.getRawHeaders(b"x-request-id")
        value = values[0] if values else None
    return value or b""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def worker_path(path: str, index: int | None) -> str:
    """``requests.jsonl`` for worker 1 is ``requests-1.jsonl``: one file per process."""
    if index is None:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}-{index}{ext}"


class RequestLog(Service):
    """Buffers finished requests and writes them out as JSON lines."""

    def __init__(
        self,
        path: str,
        clock: Clock,
        max_size: int = 100 * 1024 * 1024,
        files: int = 5,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.path = path
        self.clock = clock
        self.interval = interval
        directory = os.path.dirname(os.path.abspath(path))
        self.file = LogFile(
            os.path.basename(path), directory, rotateLength=max_size, maxRotatedFiles=files
        )
        self.pending: list[tuple[float, bytes, str, str, bytes, str, int, Outcome | None]] = []
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock  # type: ignore[assignment]

    def startService(self) -> None:
        super().startService()
        if not self._loop.running:
            # A failed write (a full disk) stops the loop; say so now, on
            # every runtime, not when (if ever) the GC finds the Deferred.
            self._loop.start(self.interval, now=False).addErrback(
                lambda failure: _log.failure(
                    "request log: cannot write {path}", failure, path=self.path
                )
            )

    def add(self, request: Any, status: int, endpoint: str, outcome: Outcome | None) -> None:
        """A request ended: keep what it knows; formatting waits for the flush."""
        pending = self.pending
        pending.append(
            (
                self.clock.seconds(),
                _request_id(request),
                _client(request),
                key_label(request),
                request.method,
                endpoint,
                status,
                outcome,
            )
        )
        if len(pending) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """
        Write what is buffered, in as few writes as rotation allows: LogFile
        rotates before a write that finds the file full, so lines are joined
        up to the line that fills it, as if written one by one.
        """
        pending, self.pending = self.pending, []
        if not pending:
            return
        log = self.file
        limit = log.rotateLength or 0
        stamps = _Stamps()
        chunk: list[str] = []
        size = log.size
        for entry in pending:
            line = format_line(*entry, stamps=stamps)
            chunk.append(line)
            size += len(line)
            if limit and size >= limit:
                log.write("".join(chunk))
                chunk, size = [], 0
        if chunk:
            log.write("".join(chunk))
        log.flush()

    def close(self) -> None:
        """
        Flush and close: at shutdown, once no request is left in flight.  The
        file is closed even if the flush fails (its error is raised after).
        """
        if self._loop.running:
            self._loop.stop()
        if not self.file.closed:
            try:
                self.flush()
            finally:
                self.file.close()


#: The generation fields of a request that had none (every line has every key).
_NOTHING = dict.fromkeys(
    (
        "model",
        "stream",
        "prompt_tokens",
        "completion_tokens",
        "queue_ms",
        "ttft_ms",
        "e2e_ms",
        "finish_reason",
        "error",
        "rule",
        "fault",
    )
)


class _Stamps:
    """ISO 8601 times, the date and second formatted once per second of lines."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, at: float) -> str:
        second = int(at)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((at - second) * 1000):03d}Z"


def format_line(
    at: float,
    request_id: bytes,
    client: str,
    key: str,
    method: bytes,
    endpoint: str,
    status: int,
    outcome: Outcome | None,
    stamps: _Stamps | None = None,
) -> str:
    """One request as a JSON line (see the README for the fields)."""
    record: dict[str, Any] = {
        "time": (stamps or _Stamps())(at),
        "id": request_id.decode("latin-1"),
        "client": client,
        "key": key,
        "method": method.decode("latin-1"),
        "endpoint": endpoint,
        "status": status,
    }
    if outcome is None:
        record.update(_NOTHING)
    else:
        record.update(
            model=outcome.model or None,
            stream=outcome.stream,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            queue_ms=_ms(outcome.queue),
            ttft_ms=_ms(outcome.ttft),
            e2e_ms=_ms(outcome.e2e),
            finish_reason="cancelled" if outcome.cancelled else outcome.finish_reason,
            error=outcome.error,
        )
        decision = outcome.decision
        if decision is None:
            record.update(rule=None, fault=None)
        else:
            record.update(rule=decision.rule, fault=",".join(decision.actions) or None)
    return ujson.dumps(record, ensure_ascii=False, escape_forward_slashes=False) + "\n"
