# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter mode: the ``/api/v1/...`` endpoints of OpenRouter's API over the
same simulation as the OpenAI ones.

    api       the endpoints: authenticate, check credits, route, plan
    answer    one generation on its way out, and its record when it is over
    routing   request extras (models, provider, reasoning, ...) and routing
    render    OpenRouter-dialect bodies and stream events
    stream    processing comments and mid-stream failures around the producer
    store     finished generations, bounded in number and age
    accounts  per-key usage and the credit limit
    catalog   /models, /models/{id}, /models/{id}/endpoints
    errors    OpenRouter's error envelope and errors
"""
