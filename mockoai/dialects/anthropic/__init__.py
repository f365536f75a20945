"""
Anthropic's Messages API (``/v1/messages``) as a dialect of the one generation
pipeline: its validation, its Message and event stream, its error envelope,
its model list and ``count_tokens``.  The wire facts it follows are in
``docs/wire-facts-anthropic.md``.
"""
