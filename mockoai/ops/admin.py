# -*- test-case-name: tests.test_admin -*-
"""
The admin API under ``/_mockoai/``: rules, per-model settings, resets, the
journal and the verdict, at runtime.

    GET  /_mockoai/rules             the rules in force, with their counts
    PUT  /_mockoai/rules             replace them (a rules document, JSON or TOML)
    GET  /_mockoai/models            every configured model's per-model settings
    GET  /_mockoai/models/{id}       one model's
    PATCH /_mockoai/models/{id}      change some (latency, lengths, engine) now
    POST /_mockoai/reset             counters, journal, rate-limit buckets, rule counts
    GET  /_mockoai/journal           the last requests (?limit=N)
    GET  /_mockoai/verdict           each client's verdict (JSON; ?format=text or
                                     Accept: text/plain for plain words)

When API keys are configured the admin API wants ``--admin-key`` (as a
bearer key, or ``x-mockoai-admin-key``), and is off without one; the
site's key check leaves these paths to it (L{mockoai.pipeline.auth}).
With ``--workers`` a change is made in this worker, then asked of every
sibling (L{mockoai.ops.siblings}: the document goes through a file in the
run directory, the question names it), and the answer says how many
workers took it; the journal and the verdict merge every worker's ring.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from mockoai.apierror import APIError
from mockoai.ops import verdict
from mockoai.ops.config import model_settings, with_model_settings
from mockoai.ops.journal import merged
from mockoai.pipeline.auth import presented_key
from mockoai.pipeline.media import JSON, dumps
from mockoai.pipeline.rules import RuleError, compile_document, loads_json
from mockoai.sim.engine import Engine

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.9
    import tomli as tomllib

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.ops.journal import Journal
    from mockoai.ops.metrics import Metrics
    from mockoai.ops.siblings import Siblings
    from mockoai.pipeline.control import Control
    from mockoai.pipeline.limits import RateLimits
    from mockoai.sim.core import Core, ServedModel

_log = Logger(namespace="mockoai")

TEXT = b"text/plain; charset=utf-8"
#: The siblings' topic for admin questions.
TOPIC = "admin"
ADMIN_KEY_HEADER = b"x-mockoai-admin-key"
_WORKER = re.compile(r"worker-(\d+)\.sock$")


def _error(status: int, message: str, code: str | None = None) -> APIError:
    return APIError(status, message, code=code)


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(bytes(request.uri).decode("utf-8", "replace")).query)


class Admin:
    """The admin API's handlers, over the pieces of one worker."""

    def __init__(
        self,
        core: Core,
        control: Control,
        journal: Journal,
        metrics: Metrics,
        limits: RateLimits | None,
        admin_key: str | None,
        keys_configured: bool,
    ) -> None:
        self.core = core
        self.control = control
        self.journal = journal
        self.metrics = metrics
        self.limits = limits
        self.key = None if admin_key is None else admin_key.encode("utf-8")
        self.keys_configured = keys_configured
        #: Set with --workers: this worker's index, and how it reaches the others.
        self.worker: int | None = None
        self.siblings: Siblings | None = None
        self._files = itertools.count()

    # --- who may -------------------------------------------------------------------

    def check(self, request: Request) -> None:
        """The admin key, when one is needed (raises the 401 or 403)."""
        key = self.key
        if key is None:
            if self.keys_configured:
                raise _error(
                    403,
                    "The admin API is off: API keys are configured and no admin key is "
                    "(start mockoai with --admin-key).",
                    "admin_api_off",
                )
            return
        given = request.getHeader(ADMIN_KEY_HEADER) or presented_key(request)
        if given != key:
            raise _error(
                401,
                "The admin API needs the admin key (--admin-key), as Authorization: Bearer "
                "KEY or x-mockoai-admin-key: KEY.",
                "invalid_admin_key",
            )

    # --- rules ---------------------------------------------------------------------

    def get_rules(self, request: Request) -> bytes:
        self.check(request)
        request.setHeader(b"Content-Type", JSON)
        return dumps(self.control.rules_state())

    def put_rules(self, request: Request) -> bytes | Deferred[bytes]:
        """Replace the rules with the body's document, here and in every sibling."""
        self.check(request)
        document = _document(request)
        try:
            book = compile_document(document, "admin API")
        except RuleError as e:
            raise _error(400, f"Invalid rules: {e}", "invalid_rules") from None
        self.control.load(book)
        _log.info("rules: {n} rule(s) from the admin API", n=len(book.rules))
        request.setHeader(b"Content-Type", JSON)
        return self._everywhere("rules", document, {"rules": len(book.rules)})

    # --- models --------------------------------------------------------------------

    def _served(self, model: str) -> ServedModel:
        served = self.core.models.get(model)
        if served is None:
            raise _error(404, f"The model `{model}` is not configured.", "model_not_found")
        return served

    def get_models(self, request: Request) -> bytes:
        self.check(request)
        request.setHeader(b"Content-Type", JSON)
        return dumps(
            {name: model_settings(served.profile) for name, served in self.core.models.items()}
        )

    def get_model(self, request: Request, model: str) -> bytes:
        self.check(request)
        request.setHeader(b"Content-Type", JSON)
        return dumps(model_settings(self._served(model).profile))

    def patch_model(self, request: Request, model: str) -> bytes | Deferred[bytes]:
        """Change some of a model's per-model settings, here and in every sibling."""
        self.check(request)
        self._served(model)
        changes = _document(request)
        if not isinstance(changes, dict) or not changes:
            raise _error(400, 'Expected an object of per-model settings, e.g. {"itl": 20}.')
        settings = self._apply_model(model, changes)
        request.setHeader(b"Content-Type", JSON)
        return self._everywhere("model", {"model": model, "settings": changes}, settings)

    def _apply_model(self, model: str, changes: dict[str, Any]) -> dict[str, str]:
        served = self._served(model)
        try:
            profile = with_model_settings(served.profile, changes)
        except ValueError as e:
            raise _error(400, f"Invalid setting for {model}: {e}", "invalid_value") from None
        served.profile = profile
        engine = served.engine
        if not profile.engine.enabled:
            served.engine = None
        elif engine is None:
            served.engine = Engine(served.pacer, profile.latency, profile.engine, model=model)
        else:
            engine.config = profile.engine
            engine.latency = profile.latency
        _log.info("model {model}: {changes} from the admin API", model=model, changes=changes)
        return model_settings(profile)

    # --- reset ---------------------------------------------------------------------

    def reset(self, request: Request) -> bytes | Deferred[bytes]:
        """Counters, the journal, rate-limit buckets and rule counts, in every worker."""
        self.check(request)
        self._reset()
        request.setHeader(b"Content-Type", JSON)
        return self._everywhere("reset", None, {"reset": True})

    def _reset(self) -> None:
        self.control.reset()
        self.journal.clear()
        self.metrics.clear()
        if self.limits is not None:
            self.limits.clear()

    # --- journal and verdict -------------------------------------------------------

    def get_journal(self, request: Request) -> bytes | Deferred[bytes]:
        self.check(request)
        query = _query(request)
        limit = _limit(query)
        request.setHeader(b"Content-Type", JSON)
        return self._gathered(
            lambda entries: dumps({"requests": entries[-limit:] if limit else entries})
        )

    def get_verdict(self, request: Request) -> bytes | Deferred[bytes]:
        self.check(request)
        query = _query(request)
        accept = request.getHeader(b"accept") or b""
        plain = query.get("format", [""])[0] == "text" or (
            b"text/plain" in accept and b"json" not in accept
        )
        request.setHeader(b"Content-Type", TEXT if plain else JSON)

        def render(entries: list[dict[str, Any]]) -> bytes:
            judged = verdict.judge(entries)
            return verdict.text(judged).encode() if plain else dumps(judged)

        return self._gathered(render)

    def _gathered(self, render: Any) -> bytes | Deferred[bytes]:
        """``render`` of every worker's journal, merged."""
        own = self.journal.entries()
        if self.siblings is None:
            return render(own)  # type: ignore[no-any-return]
        asked = self._ask_all("journal", "")

        def merge(answers: list[Any]) -> bytes:
            lists = [own, *(a for a in answers if isinstance(a, list))]
            return render(merged(lists))  # type: ignore[no-any-return]

        return asked.addCallback(lambda found: merge(found[0]))

    # --- every worker --------------------------------------------------------------

    def answer(self, question: str, subject: str) -> Any:
        """A sibling's admin question (L{mockoai.ops.siblings}): do it here too."""
        if question == "journal":
            return self.journal.entries()
        if question == "reset":
            self._reset()
            return {"reset": True}
        with open(subject, "rb") as handle:
            document = json.loads(handle.read())
        if question == "rules":
            self.control.load(compile_document(document, "admin API"))
            return {"rules": len(self.control.book.rules)}
        if question == "model":
            return self._apply_model(document["model"], document["settings"])
        raise ValueError(f"no such admin question: {question!r}")

    def _everywhere(self, question: str, document: Any, result: Any) -> bytes | Deferred[bytes]:
        """``result`` once every sibling has done ``question`` too (with ``document``)."""
        if self.siblings is None:
            return dumps({**result, "workers": 1, "failed": 0})
        path = ""
        if document is not None:
            path = os.path.join(
                self.siblings.run_dir, f"admin-{self.worker}-{os.getpid()}-{next(self._files)}.json"
            )
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(document, handle)

        def done(found: tuple[list[Any], int]) -> bytes:
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            answers, failed = found
            return dumps({**result, "workers": 1 + len(answers), "failed": failed})

        return self._ask_all(question, path).addCallback(done)

    def _ask_all(self, question: str, subject: str) -> Deferred[tuple[list[Any], int]]:
        """Every sibling's answer (those that answered), and how many did not."""
        siblings = self.siblings
        if siblings is None:
            return succeed(([], 0))
        indices = []
        for path in siblings.others():
            found = _WORKER.search(path)
            if found is not None:
                indices.append(int(found.group(1)))
        asks = [siblings.ask(index, TOPIC, question, subject) for index in indices]
        gathered: Deferred[Any] = DeferredList(asks, consumeErrors=True)

        def count(results: list[tuple[bool, Any]]) -> tuple[list[Any], int]:
            answers = [value for ok, value in results if ok and value is not None]
            return answers, len(results) - len(answers)

        return gathered.addCallback(count)


def _document(request: Request) -> object:
    """The body: JSON, or TOML when the content type says so."""
    raw = request.content.read()
    content_type = (request.getHeader(b"content-type") or b"").lower()
    if b"toml" in content_type:
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise _error(400, f"The body is not valid TOML: {e}") from None
    try:
        return loads_json(raw)
    except RuleError as e:
        message = str(e)
        raise _error(400, message[:1].upper() + message[1:]) from None


def _limit(query: dict[str, list[str]]) -> int:
    raw = query.get("limit", ["0"])[0]
    if not raw.isdigit():
        raise _error(400, f"limit must be a whole number, got {raw!r}")
    return int(raw)
