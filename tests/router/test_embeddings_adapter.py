"""/v1/embeddings translation: input validation, OpenAI pass-through, Gemini batchEmbedContents."""

from __future__ import annotations

import base64
import math
import struct
from array import array
from typing import Any

import httpx2
import openai
import openai.types
import orjson
import pytest

from aig_common.errors import APIError
from catalog.models import Catalog, EmbeddingModel, load_catalog
from router.adapters import embeddings
from router.adapters.base import UpstreamError

# Exactly representable in float32, so conversions must round-trip them bit for bit.
VECTOR_A = [0.5, -0.25, 1.0, 0.0]
VECTOR_B = [0.125, 2.0, -3.5, 0.75]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def embedding_model(catalog: Catalog, model_id: str) -> EmbeddingModel:
    found = catalog.embedding(model_id)
    assert found is not None
    return found


def float32_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def decode_base64(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def openai_payload(*vectors: list[float] | str, prompt_tokens: int = 7) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def input_error(body: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as caught:
        embeddings.parse_embeddings_input(body)
    assert caught.value.status == 400
    assert caught.value.param == "input"
    return caught.value


# --- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
        ([0] * 5000, [[0] * 5000]),  # one long token array is one input, not 5000
    ],
)
def test_input_forms(raw: Any, expected: Any) -> None:
    assert embeddings.parse_embeddings_input({"input": raw}) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "must be a string"),
        (5, "must be a string"),
        ({"text": "x"}, "must be a string"),
        ([], "must not be empty"),
        ("", "must not be an empty string"),
        (["ok", ""], "'input[1]' must not be an empty string"),
        (["a", 1], "mixes types"),
        ([[1], "a"], "mixes types"),
        ([[1], []], "'input[1]' must be a non-empty array"),
        ([[1, -2]], "'input[0]' must be a non-empty array"),
        ([[True]], "'input[0]' must be a non-empty array"),
        (["x"] * 2049, "2049 items; at most 2048"),
    ],
)
def test_bad_inputs(raw: Any, fragment: str) -> None:
    assert fragment in input_error({"input": raw}).message


def test_2048_inputs_are_allowed() -> None:
    assert len(embeddings.parse_embeddings_input({"input": ["x"] * 2048})) == 2048


def test_encoding_format() -> None:
    assert embeddings.parse_encoding_format({}) == "float"
    assert embeddings.parse_encoding_format({"encoding_format": "base64"}) == "base64"
    with pytest.raises(APIError) as caught:
        embeddings.parse_encoding_format({"encoding_format": "int8"})
    assert caught.value.param == "encoding_format"


def test_dimensions(catalog: Catalog) -> None:
    small = embedding_model(catalog, "text-embedding-3-small")
    ada = embedding_model(catalog, "text-embedding-ada-002")
    assert embeddings.parse_dimensions({}, small) is None
    assert embeddings.parse_dimensions({"dimensions": 256}, small) == 256
    assert embeddings.parse_dimensions({"dimensions": 1536}, ada) == 1536
    cases: list[tuple[dict[str, Any], EmbeddingModel, str]] = [
        ({"dimensions": 256}, ada, "does not support changing 'dimensions'"),
        ({"dimensions": 4096}, small, "'dimensions' is too large: 4096"),
        ({"dimensions": 0}, small, "must be a positive integer"),
        ({"dimensions": "256"}, small, "must be a positive integer"),
    ]
    for body, target, fragment in cases:
        with pytest.raises(APIError) as caught:
            embeddings.parse_dimensions(body, target)
        assert caught.value.status == 400 and caught.value.param == "dimensions"
        assert fragment in caught.value.message


def test_token_arrays_are_rejected_for_gemini(catalog: Catalog) -> None:
    gemini = embedding_model(catalog, "gemini-embedding-001")
    assert embeddings.require_text_inputs(["a", "b"], gemini) == ["a", "b"]
    with pytest.raises(APIError) as caught:
        embeddings.require_text_inputs([[1, 2]], gemini)
    assert caught.value.status == 400
    assert "only for OpenAI-family" in caught.value.message


# --- OpenAI / OpenRouter --------------------------------------------------------------------------


def test_openai_request_swaps_the_model_and_drops_unknown_fields() -> None:
    body = {
        "model": "qwen3-embedding-8b",
        "input": ["a"],
        "encoding_format": "base64",
        "dimensions": 64,
        "user": "u1",
        "provider": {"order": ["x"]},
    }
    request = embeddings.build_openai_embeddings_request(body, "qwen/qwen3-embedding-8b")
    assert request == {
        "model": "qwen/qwen3-embedding-8b",
        "input": ["a"],
        "encoding_format": "base64",
        "dimensions": 64,
        "user": "u1",
    }
    minimal = embeddings.build_openai_embeddings_request({"input": "a"}, "m")
    assert minimal == {"model": "m", "input": "a"}


def test_float_response_passes_through_with_the_public_model() -> None:
    result, usage = embeddings.embeddings_from_openai_response(
        openai_payload(VECTOR_A, VECTOR_B, prompt_tokens=9),
        public_model="mistral-embed",
        requested_format="float",
    )
    parsed = openai.types.CreateEmbeddingResponse.model_validate(result)
    assert parsed.model == "mistral-embed"
    assert [d.embedding for d in parsed.data] == [VECTOR_A, VECTOR_B]
    assert result["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert usage.prompt_tokens == 9
    assert set(result) == {"object", "data", "model", "usage"}


def test_floats_become_base64_when_the_client_asked_base64() -> None:
    result, _ = embeddings.embeddings_from_openai_response(
        openai_payload(VECTOR_A, VECTOR_B), public_model="m", requested_format="base64"
    )
    encoded = [item["embedding"] for item in result["data"]]
    assert all(isinstance(value, str) for value in encoded)
    assert decode_base64(encoded[0]) == VECTOR_A
    assert decode_base64(encoded[1]) == VECTOR_B
    # The SDK's numpy-free decoder reads the same values.
    decoded = array("f")
    decoded.frombytes(base64.b64decode(encoded[0]))
    assert decoded.tolist() == VECTOR_A


def test_base64_becomes_floats_when_the_client_asked_floats() -> None:
    result, _ = embeddings.embeddings_from_openai_response(
        openai_payload(float32_base64(VECTOR_A)), public_model="m", requested_format="float"
    )
    assert result["data"][0]["embedding"] == VECTOR_A
    openai.types.CreateEmbeddingResponse.model_validate(result)


def test_base64_passes_through_untouched() -> None:
    encoded = float32_base64(VECTOR_B)
    result, _ = embeddings.embeddings_from_openai_response(
        openai_payload(encoded), public_model="m", requested_format="base64"
    )
    assert result["data"][0]["embedding"] == encoded


def test_out_of_order_upstream_data_is_sorted_by_index() -> None:
    payload = openai_payload(VECTOR_A, VECTOR_B)
    payload["data"].reverse()
    result, _ = embeddings.embeddings_from_openai_response(
        payload, public_model="m", requested_format="float"
    )
    assert [item["embedding"] for item in result["data"]] == [VECTOR_A, VECTOR_B]
    assert [item["index"] for item in result["data"]] == [0, 1]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"data": []},
        openai_payload("not base64!!"),
        openai_payload(base64.b64encode(b"abc").decode()),  # not whole float32 values
        openai_payload({"x": 1}),  # type: ignore[arg-type]
        {"data": [{"index": 0, "embedding": [1.0]}]},  # no usage
    ],
)
def test_malformed_upstream_response_is_a_502(payload: Any) -> None:
    with pytest.raises(UpstreamError) as caught:
        embeddings.embeddings_from_openai_response(
            payload, public_model="m", requested_format="float"
        )
    assert caught.value.status == 502
    assert caught.value.body["error"]["code"] == "bad_upstream_response"


def test_openai_sdk_decodes_a_converted_response() -> None:
    """The Python SDK asks for base64 by default; an upstream answering floats must still work."""

    def upstream_gave_floats(request: httpx2.Request) -> httpx2.Response:
        sent = orjson.loads(request.content)
        assert sent["encoding_format"] == "base64"
        result, _ = embeddings.embeddings_from_openai_response(
            openai_payload(VECTOR_A, VECTOR_B),
            public_model=sent["model"],
            requested_format=embeddings.parse_encoding_format(sent),
        )
        return httpx2.Response(200, content=orjson.dumps(result))

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://127.0.0.1:9/v1",
        # The SDK's own HTTP library (httpx2 from openai 3.x on), with no network at all.
        http_client=httpx2.Client(transport=httpx2.MockTransport(upstream_gave_floats)),
    )
    response = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [item.embedding for item in response.data] == [VECTOR_A, VECTOR_B]
    assert response.model == "text-embedding-3-small"


# --- Gemini ------------------------------------------------------------


def test_gemini_request_shape() -> None:
    assert (
        embeddings.gemini_batch_embed_path("gemini-embedding-001")
        == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    )
    assert embeddings.gemini_batch_embed_path("models/gemini-embedding-001") == (
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    )
    request = embeddings.build_gemini_batch_embed_request(["a", "b"], "gemini-embedding-001", 768)
    assert request == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 768,
            }
            for text in ["a", "b"]
        ]
    }
    plain = embeddings.build_gemini_batch_embed_request(["a"], "gemini-embedding-001", None)
    assert "outputDimensionality" not in plain["requests"][0]


def test_gemini_response_becomes_openai_with_unit_vectors_and_estimated_usage() -> None:
    texts = ["x" * 40, "hi"]
    payload = {"embeddings": [{"values": [3.0, 4.0]}, {"values": [0.0, 0.5]}]}
    result, usage = embeddings.embeddings_from_gemini_response(
        payload, public_model="gemini-embedding-001", texts=texts, requested_format="float"
    )
    parsed = openai.types.CreateEmbeddingResponse.model_validate(result)
    assert parsed.model == "gemini-embedding-001"
    assert [d.index for d in parsed.data] == [0, 1]
    assert parsed.data[0].embedding == pytest.approx([0.6, 0.8])
    assert parsed.data[1].embedding == pytest.approx([0.0, 1.0])
    # 40 chars -> 10 tokens; 2 chars -> at least 1.
    assert usage.prompt_tokens == 11
    assert result["usage"] == {"prompt_tokens": 11, "total_tokens": 11}


def test_gemini_response_as_base64() -> None:
    payload = {"embeddings": [{"values": [0.6, 0.8]}]}
    result, _ = embeddings.embeddings_from_gemini_response(
        payload, public_model="g", texts=["t"], requested_format="base64"
    )
    decoded = decode_base64(result["data"][0]["embedding"])
    assert decoded == pytest.approx([0.6, 0.8], rel=1e-6)
    assert math.isclose(math.hypot(*decoded), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    "payload",
    [{}, {"embeddings": []}, {"embeddings": [{"values": []}]}, {"embeddings": [{"values": ["a"]}]}],
)
def test_malformed_gemini_response_is_a_502(payload: Any) -> None:
    with pytest.raises(UpstreamError) as caught:
        embeddings.embeddings_from_gemini_response(
            payload, public_model="g", texts=["t"], requested_format="float"
        )
    assert caught.value.status == 502


def test_gemini_batches_split_and_merge_in_order() -> None:
    texts = [f"t{i}" for i in range(250)]
    chunks = embeddings.split_for_gemini(texts)
    assert [len(chunk) for chunk in chunks] == [100, 100, 50]
    assert [text for chunk in chunks for text in chunk] == texts
    payloads = [
        {"embeddings": [{"values": [float(int(text[1:])) + 1.0]} for text in chunk]}
        for chunk in chunks
    ]
    merged = embeddings.merge_gemini_batch_responses(payloads)
    result, _ = embeddings.embeddings_from_gemini_response(
        merged, public_model="g", texts=texts, requested_format="float"
    )
    # One-dimensional vectors normalize to 1.0; order and count must survive the merge.
    assert len(result["data"]) == 250
    assert [item["index"] for item in result["data"]] == list(range(250))
    assert merged["embeddings"][249] == {"values": [250.0]}
