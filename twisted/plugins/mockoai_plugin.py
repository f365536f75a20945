"""The ``twistd mockoai`` plugin: all logic lives in L{mockoai.tap}."""

from twisted.application.service import ServiceMaker

mockoai = ServiceMaker(
    "mockoai",
    "mockoai.tap",
    "A mock OpenAI-compatible API server (chat, completions, models; SSE streaming).",
    "mockoai",
)
