"""Provider simulators: OpenAI, OpenRouter, Anthropic and Gemini on one port.

Each simulator speaks its provider's real wire format (paths, auth headers, bodies,
SSE event sequences, error shapes) and answers deterministically from the request, so
the gateway's tests, `make up` without provider keys, and the benchmarks all run
without network access. `sandbox.app.create_app()` builds the ASGI app;
`python -m sandbox` serves it.
"""
