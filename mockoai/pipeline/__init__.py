"""
The one generation pipeline every dialect runs: parse, resolve the model,
gate (auth, rate limits, engine admission), plan, faults, answer (plain or
streamed).  What differs between APIs is a dialect object handed to it.
"""
