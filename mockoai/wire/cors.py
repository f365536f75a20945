# -*- test-case-name: tests.test_cors -*-
"""
CORS, so a web page on another origin can call the mock from a browser.

Off unless ``--cors-origin`` is given: then the site holds no L{Cors} and a
request pays one attribute test.  When on, L{Cors.apply} runs first for
every request, before routing and before API keys (a browser's preflight
carries no ``Authorization``):

- a preflight (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) is answered at once with 204 and the
  allowed methods, headers and max-age -- or, for an origin not allowed,
  with a bare 204 the browser reads as a refusal;
- any other request from an allowed origin gets ``Access-Control-Allow-Origin``
  and ``Access-Control-Expose-Headers`` before it is routed, so every answer
  -- plain, streamed or an error -- carries them.

Every header value is rendered at startup; a request costs a header lookup
or two and a set lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mockoai.ops.config import CORS_ANY, CORS_MAX_AGE, CORS_METHODS, CorsSettings

#: Response headers a page may read: the ones the official SDKs read.
EXPOSED = (
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "retry-after-ms",
    "x-generation-id",
)

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_ALLOW_ORIGIN = b"Access-Control-Allow-Origin"
_VARY = b"Vary"


class Cors:
    """An origin allow-list and the pre-rendered headers of its answers."""

    def __init__(
        self,
        origins: Iterable[str],
        methods: Iterable[str] = CORS_METHODS,
        headers: Iterable[str] = (CORS_ANY,),
        max_age: int = CORS_MAX_AGE,
        credentials: bool = False,
    ) -> None:
        wanted = [o.lower().rstrip("/") for o in origins]
        if not wanted:
            raise ValueError("CORS needs at least one origin (or *)")
        self.any_origin = CORS_ANY in wanted
        self.origins = frozenset(o.encode("ascii") for o in wanted if o != CORS_ANY)
        # Credentials forbid "*": the request's origin is echoed instead.
        self._star = b"*" if self.any_origin and not credentials else None
        header_list = [h.strip() for h in headers if h.strip()]
        self._echo_headers = CORS_ANY in header_list
        common: list[tuple[bytes, bytes]] = []
        if credentials:
            common.append((b"Access-Control-Allow-Credentials", b"true"))
        self._actual = [
            (b"Access-Control-Expose-Headers", ", ".join(EXPOSED).encode("ascii")),
            *common,
        ]
        preflight = [
            (b"Access-Control-Allow-Methods", ", ".join(m.upper() for m in methods).encode()),
            (b"Access-Control-Max-Age", b"%d" % max_age),
            *common,
        ]
        if not self._echo_headers:
            preflight.append(
                (b"Access-Control-Allow-Headers", ", ".join(header_list).encode("ascii"))
            )
        self._preflight = preflight
        # The answer depends on the request's Origin unless it is always "*";
        # with echoed headers the preflight also depends on what was asked.
        self._vary_actual = None if self._star is not None else b"Origin"
        self._vary_preflight = (
            b"Origin, Access-Control-Request-Headers" if self._echo_headers else b"Origin"
        )

    def allowed(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or ``None``."""
        if self._star is not None:
            return self._star
        if self.any_origin or origin.lower() in self.origins:
            return origin
        return None

    def apply(self, request: Any) -> bool:
        """
        Add the CORS headers ``request``'s answer needs; answer it here and
        return ``True`` if it is a preflight.
        """
        origin = request.getHeader(_ORIGIN)
        if origin is None:
            if self._vary_actual is not None:
                request.setHeader(_VARY, self._vary_actual)
            return False
        if request.method == b"OPTIONS" and request.getHeader(_REQUEST_METHOD) is not None:
            self._answer_preflight(request, origin)
            return True
        allow = self.allowed(origin)
        if self._vary_actual is not None:
            request.setHeader(_VARY, self._vary_actual)
        if allow is not None:
            request.setHeader(_ALLOW_ORIGIN, allow)
            for name, value in self._actual:
                request.setHeader(name, value)
        return False

    def _answer_preflight(self, request: Any, origin: bytes) -> None:
        request.setResponseCode(204)
        request.setHeader(_VARY, self._vary_preflight)
        allow = self.allowed(origin)
        if allow is not None:
            request.setHeader(_ALLOW_ORIGIN, allow)
            for name, value in self._preflight:
                request.setHeader(name, value)
            if self._echo_headers:
                asked = request.getHeader(_REQUEST_HEADERS)
                if asked:
                    request.setHeader(b"Access-Control-Allow-Headers", asked)
        request.finish()


def from_settings(settings: CorsSettings) -> Cors | None:
    """The site's CORS policy, or ``None`` when no origin is allowed (off)."""
    if not settings.origins:
        return None
    return Cors(
        settings.origins,
        settings.methods,
        settings.headers,
        settings.max_age,
        settings.credentials,
    )
