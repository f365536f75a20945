"""mockoai: a mock OpenAI-compatible API server on Twisted."""

__version__ = "0.1.0"
