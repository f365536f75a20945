# -*- test-case-name: tests.test_responses -*-
"""
Stored responses (``store: true``, the default), for ``GET``/``DELETE
/v1/responses/{id}``, ``/input_items`` and ``previous_response_id``.

A bounded, insertion-ordered map, as OpenRouter's generations are kept:
the oldest record is first, so the count and the age are enforced by
popping from the front.  A record is the finished Response body as sent,
the input as JSON, and what a later turn needs of it: the tokens of the
whole conversation so far and the ids of the calls it made.

With ``--workers`` each process keeps what it answered, and a lookup is
routed to the worker that holds it: a response id carries its worker's
index (its first two hex digits), so a request for another worker's
response asks that worker over its unix socket
(L{mockoai.ops.siblings.Siblings.ask}) instead of every worker.  Nothing
is copied between workers, and nothing is merged: a response lives where
it was made, and dies (or is deleted) there.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import ujson
from twisted.internet.defer import Deferred, succeed

from mockoai.pipeline.errors import APIError
from mockoai.pipeline.media import dumps

#: A question to another worker: (its index, what to ask, about which id).
Ask = Callable[[int, str, str], "Deferred[Any]"]


class ResponseIds:
    """
    ``resp_``, ``msg_``, ``rs_``, ``fc_`` ids of 50 hex digits, as OpenAI's:
    this worker's index, a random per-process part, and a counter.
    """

    def __init__(self, worker: int | None = None) -> None:
        self.worker = worker
        self._head = f"{(worker or 0) & 0xFF:02x}{os.urandom(12).hex()}"
        self._count = 0

    def make(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._head}{self._count:024x}"

    def call(self) -> str:
        """A function call's ``call_id``: ``call_`` and 24 characters."""
        self._count += 1
        return f"call_{self._head[2:14]}{self._count:012x}"


def holder(response_id: str) -> int | None:
    """The worker a response id says made it, or None for an id not of that shape."""
    if len(response_id) != 55 or not response_id.startswith("resp_"):
        return None
    try:
        return int(response_id[5:7], 16)
    except ValueError:
        return None


class Stored:
    """One stored response: its body, its input, and what a next turn needs of it."""

    __slots__ = ("body", "calls", "context_tokens", "created_at", "id", "input")

    def __init__(
        self,
        response_id: str,
        body: bytes,
        input_json: bytes,
        context_tokens: int,
        calls: tuple[str, ...],
        created_at: int,
    ) -> None:
        self.id = response_id
        self.body = body
        #: The request's input, as JSON (a string or a list of items).
        self.input = input_json
        #: Every token of the conversation up to and including this answer.
        self.context_tokens = context_tokens
        #: The ``call_id``s this answer made, which a next turn's outputs may answer.
        self.calls = calls
        self.created_at = created_at

    def state(self) -> dict[str, Any]:
        """The record as another worker is told it (JSON)."""
        return {
            "id": self.id,
            "body": self.body.decode("utf-8"),
            "input": self.input.decode("utf-8"),
            "context_tokens": self.context_tokens,
            "calls": list(self.calls),
            "created_at": self.created_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Stored:
        return cls(
            state["id"],
            state["body"].encode("utf-8"),
            state["input"].encode("utf-8"),
            state["context_tokens"],
            tuple(state["calls"]),
            state["created_at"],
        )


class ResponseStore:
    """At most ``size`` responses, each for ``ttl`` seconds after it finished."""

    def __init__(
        self, size: int, ttl: float, clock: Any, worker: int | None = None, ask: Ask | None = None
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self.worker = worker
        #: How to ask another worker (None: there is none).
        self.ask = ask
        self._records: OrderedDict[str, tuple[float, Stored]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, stored: Stored) -> None:
        now = self.clock.seconds()
        records = self._records
        records[stored.id] = (now, stored)
        while len(records) > self.size:
            records.popitem(last=False)
        self._expire(now)

    def local(self, response_id: str) -> Stored | None:
        """The response if this worker holds it."""
        self._expire(self.clock.seconds())
        entry = self._records.get(response_id)
        return entry[1] if entry is not None else None

    def elsewhere(self, response_id: str) -> int | None:
        """The other worker to ask for ``response_id``, or None if it would be here."""
        index = holder(response_id)
        if self.ask is None or index is None or index == (self.worker or 0):
            return None
        return index

    def get(self, response_id: str) -> Deferred[Stored | None]:
        """The response, here or at the worker that holds it."""
        index = self.elsewhere(response_id)
        if index is None:
            return succeed(self.local(response_id))
        assert self.ask is not None
        asked: Deferred[Any] = self.ask(index, "get", response_id)
        # A worker out of reach (restarting) holds nothing any more.
        return asked.addCallbacks(
            lambda state: Stored.from_state(state) if state else None, lambda _: None
        )

    def delete(self, response_id: str) -> Deferred[bool]:
        """Forget the response, wherever it is; whether there was one."""
        index = self.elsewhere(response_id)
        if index is None:
            return succeed(self.remove(response_id))
        assert self.ask is not None
        asked: Deferred[Any] = self.ask(index, "delete", response_id)
        return asked.addCallbacks(bool, lambda _: False)

    def remove(self, response_id: str) -> bool:
        self._expire(self.clock.seconds())
        return self._records.pop(response_id, None) is not None

    def answer(self, question: str, response_id: str) -> object:
        """What this worker answers another's question (L{Ask})."""
        if question == "get":
            stored = self.local(response_id)
            return None if stored is None else stored.state()
        if question == "delete":
            return self.remove(response_id)
        raise ValueError(f"unknown question {question!r}")

    def _expire(self, now: float) -> None:
        records = self._records
        horizon = now - self.ttl
        while records:
            stored, _ = next(iter(records.values()))
            if stored > horizon:
                break
            records.popitem(last=False)


def input_items(stored: Stored, ids: ResponseIds) -> list[dict[str, Any]]:
    """
    A stored input as ``/input_items`` lists it: every item with an id, a
    string input as the user message it stands for, text as ``input_text``.
    """
    value = ujson.loads(stored.input)
    if type(value) is str:
        value = [{"role": "user", "content": value}]
    items = []
    for index, item in enumerate(value):
        kind = item.get("type") or "message" if type(item) is dict else None
        if kind is None or kind == "item_reference":
            continue  # a reference lists as what it refers to, which is listed already
        # An input item's id is its position's, stable from one listing to the next.
        number = f"{stored.id[5:]}{index:04x}"
        if kind == "message":
            content = item.get("content")
            if type(content) is str:
                content = [{"type": "input_text", "text": content}]
            if item.get("role") == "assistant":
                # An earlier answer, as the output message it was.
                content = [_output_text(part) for part in content if type(part) is dict]
            entry: dict[str, Any] = {
                "id": item.get("id") or "msg_" + number[-50:],
                "type": "message",
                "role": item.get("role"),
                "content": content,
                "status": "completed",
            }
        else:
            entry = dict(item)
            entry["type"] = kind
            prefix = {"function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
            entry.setdefault("id", prefix + "_" + number[-50:])
            if kind in ("function_call", "function_call_output"):
                entry.setdefault("status", "completed")
        items.append(entry)
    return items


def _output_text(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") not in ("input_text", "output_text"):
        return part
    return {
        "type": "output_text",
        "text": part.get("text", ""),
        "annotations": part.get("annotations", []),
        "logprobs": part.get("logprobs", []),
    }


def item_list(items: list[dict[str, Any]], limit: int, order: str, after: str | None) -> bytes:
    """One page of ``/input_items``: OpenAI's list object."""
    if order == "desc":
        items = items[::-1]
    if after is not None:
        for position, item in enumerate(items):
            if item.get("id") == after:
                items = items[position + 1 :]
                break
    page = items[:limit]
    return dumps(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(items) > limit,
        }
    )


def deleted(response_id: str) -> bytes:
    return dumps({"id": response_id, "object": "response", "deleted": True})


def not_found(response_id: str) -> APIError:
    """OpenAI's 404 for a response id it does not hold."""
    return APIError(
        404,
        f"No response found with id '{response_id}'.",
        param="response_id",
        code="response_not_found",
    )


def previous_not_found(response_id: str) -> APIError:
    """OpenAI's answer to a ``previous_response_id`` it does not hold."""
    return APIError(
        400,
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )
