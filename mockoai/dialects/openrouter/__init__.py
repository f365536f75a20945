# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter mode: the ``/api/v1/...`` endpoints of OpenRouter's API over the
same simulation as the OpenAI ones.

    dialect   the generation endpoints as a dialect of the one pipeline: key,
              credits, routing, reasoning, ids, and each generation's record
    api       what the endpoints share, and the non-generation endpoints
    routing   request extras (models, provider, reasoning, ...) and routing
    render    OpenRouter-dialect bodies and stream events
    stream    processing comments while a stream waits for its first token
    store     finished generations, bounded in number and age
    accounts  per-key usage and the credit limit
    catalog   /models, /models/{id}, /models/{id}/endpoints
    errors    OpenRouter's error envelope and errors
"""
