"""The ``twistd mockoai`` plugin: all logic lives in L{mockoai.ops.tap}."""

from twisted.application.service import ServiceMaker

mockoai = ServiceMaker(
    "mockoai",
    "mockoai.ops.tap",
    "A mock OpenAI-compatible API server (chat, completions, models; SSE streaming).",
    "mockoai",
)
