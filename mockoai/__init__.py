"""
mockoai: a mock OpenAI-compatible API server on Twisted.

The public surface is small, as Klein's is: what a user embeds or tests
with is named here (and in L{mockoai.testing}); every other module is the
server's own and may change.  Names load on first use, so importing
``mockoai`` (or ``mockoai.testing``) costs no Twisted, numpy or corpus.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ConfigError", "Settings", "__version__", "build", "load_settings"]

#: Public name -> the module that defines it.
_PUBLIC = {
    "ConfigError": "mockoai.ops.config",
    "Settings": "mockoai.ops.config",
    "load_settings": "mockoai.ops.config",
    "build": "mockoai.ops.service",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mockoai' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
