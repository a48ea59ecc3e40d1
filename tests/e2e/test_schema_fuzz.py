"""Schema fuzzing of the edge: schemathesis generates valid and invalid requests from the
edge's own OpenAPI document (`/openapi.json`) and sends them to the running stack.

Every answer must be a documented status in the documented shape (errors in the route's
dialect: OpenAI's, Anthropic's under /v1/messages, Kie's envelope under /v1/jobs) and never
a 5xx. `make test` runs a
bounded number of examples per operation (`AIG_FUZZ_EXAMPLES`, 25); `make fuzz` runs many
more.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.stack import Stack

from .conftest import FAMILY_MODELS

EXAMPLES = int(os.environ.get("AIG_FUZZ_EXAMPLES", "25"))
# The hot path and the customer's reads; the admin API is fuzzed by its own unit tests.
FUZZED_PATHS = (
    r"^/v1/(chat/completions|responses|messages|embeddings|models|me|usage"
    r"|jobs/createTask|jobs/recordInfo|jobs$)"
)
REAL_MODELS = {
    "/v1/chat/completions": list(FAMILY_MODELS.values()),
    "/v1/responses": list(FAMILY_MODELS.values()),
    "/v1/messages": list(FAMILY_MODELS.values()),
    "/v1/messages/count_tokens": list(FAMILY_MODELS.values()),
    "/v1/embeddings": ["text-embedding-3-small"],
    "/v1/jobs/createTask": ["flux-kontext-pro", "veo-3.1", "suno-v4.5-plus"],
}
# A generated callBackUrl would make createTask resolve a random host name; a private
# address is refused (422) without any lookup, and tests talk only to 127.0.0.1.
REFUSED_CALLBACK = "http://127.0.0.1:9/callback"


def _steer_to_real_models(case: Any) -> None:
    """Half the generated bodies keep their random model id (a 404 path); the other half
    name a catalog model, so the fuzz reaches admission, the router and the translations."""
    models = REAL_MODELS.get(case.path)
    body = case.body
    if isinstance(body, dict) and "callBackUrl" in body:
        body["callBackUrl"] = REFUSED_CALLBACK
    if not models or not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return
    digest = zlib.crc32(repr(sorted(body)).encode())
    if digest % 2 == 0:
        body["model"] = models[digest // 2 % len(models)]


# A documentation address (RFC 5737), used by no other test.
FUZZ_CLIENT_ADDRESS = "198.51.100.16"

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_the_edge_answers_every_generated_request_as_documented(stack: Stack, api_key: str) -> None:
    document = schemathesis.openapi.from_url(f"{stack.edge_url}/openapi.json", timeout=30)
    operations = []
    for result in document.include(path_regex=FUZZED_PATHS).get_all_operations():
        assert isinstance(result, Ok), result  # the document itself must be valid
        operations.append(result.ok())
    assert {operation.path for operation in operations} >= {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/embeddings",
        "/v1/models",
        "/v1/me",
        "/v1/jobs/createTask",
        "/v1/jobs/recordInfo",
        "/v1/jobs",
    }
    # Generated cases carry made-up credentials (the Anthropic dialect's x-api-key wins over
    # the Bearer token), and the edge throttles failed auth per client address. The fuzz
    # speaks from an address of its own (uvicorn trusts the local proxy's header), so its
    # failures do not leave 127.0.0.1 throttled for the tests that run after it.
    headers = {"authorization": f"Bearer {api_key}", "x-forwarded-for": FUZZ_CLIENT_ADDRESS}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def answers_as_documented(case: Any) -> None:
            _steer_to_real_models(case)
            case.call_and_validate(
                base_url=stack.edge_url, headers=headers, checks=CHECKS, timeout=60
            )

        answers_as_documented()
