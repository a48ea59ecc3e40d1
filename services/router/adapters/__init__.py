"""Translation between OpenAI's chat/embeddings wire format and each provider's.

Adapters are pure: they build upstream request bodies and turn upstream bodies (or SSE
events) into OpenAI objects. All I/O lives in `router.upstream`.
"""
