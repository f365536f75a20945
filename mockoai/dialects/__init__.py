"""
The API dialects: what OpenAI, OpenRouter (and every API added later) do
differently over the one pipeline -- validation, renderers, ids, error
envelopes, extras.
"""
