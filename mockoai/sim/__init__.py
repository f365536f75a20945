"""
The simulation: the corpus and tokenizer, the planner, latency models, and
one engine per served model stepping on the reactor clock.  It knows no API
dialect and no HTTP.
"""
