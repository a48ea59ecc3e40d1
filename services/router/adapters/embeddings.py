"""`/v1/embeddings` translation: OpenAI-family pass-through and Gemini batchEmbedContents.

Pure functions only: request bodies in, response bodies out; the caller does the HTTP.
Clients always get the `encoding_format` they asked for, whatever the upstream returned:
the OpenAI Node SDK decodes every entry as base64 without checking its type, so a float
list sent to a base64 request would be silently corrupted.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Literal

from aig_common.errors import APIError, error_body
from catalog.models import EmbeddingModel

from .base import TokenUsage, UpstreamError

EncodingFormat = Literal["float", "base64"]

MAX_EMBEDDING_INPUTS = 2048
# batchEmbedContents accepts at most this many requests per call; larger inputs are split.
GEMINI_MAX_BATCH_SIZE = 100
# Gemini's batch response carries no token counts; ~4 characters per token is the usual
# rule of thumb for its tokenizer on English text.
GEMINI_CHARS_PER_TOKEN = 4

_OPENAI_PASSTHROUGH_PARAMS = ("encoding_format", "dimensions", "user")


# --- request validation ---------------------------------------------------------------------


def parse_embeddings_input(body: dict[str, Any]) -> list[str] | list[list[int]]:
    """Normalize `input` (string, strings, token ids, or lists of token ids) to a list."""
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise _input_error(
            "'input' must be a string, an array of strings, an array of token ids, "
            "or an array of token-id arrays."
        )
    if not items:
        raise _input_error("'input' must not be empty.")
    if all(_is_token_id(item) for item in items):
        return [list(items)]
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise _input_error(
            f"'input' holds {len(items)} items; at most {MAX_EMBEDDING_INPUTS} are allowed."
        )
    if all(isinstance(item, str) for item in items):
        for index, text in enumerate(items):
            if not text:
                raise _input_error(f"'input[{index}]' must not be an empty string.")
        return list(items)
    if all(isinstance(item, list) for item in items):
        for index, tokens in enumerate(items):
            if not tokens or not all(_is_token_id(token) for token in tokens):
                raise _input_error(
                    f"'input[{index}]' must be a non-empty array of non-negative token ids."
                )
        return [list(tokens) for tokens in items]
    raise _input_error(
        "'input' mixes types; send all strings, all token ids, or all token-id arrays."
    )


def parse_encoding_format(body: dict[str, Any]) -> EncodingFormat:
    # The API's default is float; the OpenAI SDKs always send "base64" explicitly.
    value = body.get("encoding_format")
    if value is None or value == "float":
        return "float"
    if value == "base64":
        return "base64"
    raise APIError(
        400,
        f"'encoding_format' must be 'float' or 'base64', got {value!r}.",
        param="encoding_format",
        code="invalid_value",
    )


def parse_dimensions(body: dict[str, Any], model: EmbeddingModel) -> int | None:
    """The requested output size, checked against what `model` can produce."""
    value = body.get("dimensions")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise APIError(
            400,
            f"'dimensions' must be a positive integer, got {value!r}.",
            param="dimensions",
            code="invalid_value",
        )
    if value == model.default_dimensions:
        return value
    if not model.dimensions_configurable:
        raise APIError(
            400,
            f"Model '{model.id}' does not support changing 'dimensions' "
            f"(it always returns {model.default_dimensions}).",
            param="dimensions",
            code="unsupported_parameter",
        )
    if value > model.default_dimensions:
        raise APIError(
            400,
            f"'dimensions' is too large: {value}. Model '{model.id}' returns at most "
            f"{model.default_dimensions}.",
            param="dimensions",
            code="invalid_value",
        )
    return value


def require_text_inputs(inputs: list[str] | list[list[int]], model: EmbeddingModel) -> list[str]:
    """Gemini embeds text only; token ids would need an OpenAI tokenizer to turn back into text."""
    texts = [item for item in inputs if isinstance(item, str)]
    if len(texts) != len(inputs):
        raise APIError(
            400,
            f"Model '{model.id}' accepts text input only. Token-id arrays are accepted only "
            "for OpenAI-family embedding models; send strings instead (for LangChain's "
            "OpenAIEmbeddings set check_embedding_ctx_length=False).",
            param="input",
            code="invalid_value",
        )
    return texts


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _input_error(message: str) -> APIError:
    return APIError(400, message, param="input", code="invalid_value")


# --- OpenAI and OpenRouter --------------------------------------------------------------------


def build_openai_embeddings_request(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The upstream body: the client's request with the upstream model id.

    Only parameters the embeddings API defines are forwarded; anything else a client adds
    would make OpenAI answer 400 for a field aig never promised to support.
    """
    request: dict[str, Any] = {"model": upstream_model, "input": body.get("input")}
    for param in _OPENAI_PASSTHROUGH_PARAMS:
        if body.get(param) is not None:
            request[param] = body[param]
    return request


def embeddings_from_openai_response(
    payload: Any, *, public_model: str, requested_format: EncodingFormat
) -> tuple[dict[str, Any], TokenUsage]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise _bad_upstream("the embeddings response has no 'data'")
    vectors: list[tuple[int, list[float] | str]] = []
    for position, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise _bad_upstream(f"data[{position}] is not an object")
        index = entry.get("index", position)
        if not isinstance(index, int):
            raise _bad_upstream(f"data[{position}].index is not an integer")
        vectors.append((index, _convert(entry.get("embedding"), requested_format)))
    # Clients pair vectors with inputs by index; some upstreams return them out of order.
    vectors.sort(key=lambda item: item[0])
    usage_block = payload.get("usage")
    prompt_tokens = usage_block.get("prompt_tokens") if isinstance(usage_block, dict) else None
    if not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise _bad_upstream("the embeddings response has no usage.prompt_tokens")
    usage = TokenUsage(prompt_tokens=prompt_tokens)
    return _response(public_model, [vector for _, vector in vectors], usage), usage


# --- Gemini -------------------------------------------------------------------------------------


def gemini_batch_embed_path(upstream_model: str) -> str:
    return f"/v1beta/models/{_bare_gemini_model(upstream_model)}:batchEmbedContents"


def build_gemini_batch_embed_request(
    texts: list[str], upstream_model: str, dimensions: int | None
) -> dict[str, Any]:
    model_name = f"models/{_bare_gemini_model(upstream_model)}"
    requests: list[dict[str, Any]] = []
    for text in texts:
        request: dict[str, Any] = {"model": model_name, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    return {"requests": requests}


def split_for_gemini(texts: list[str]) -> list[list[str]]:
    """Chunks of at most GEMINI_MAX_BATCH_SIZE texts, in order, one upstream call each."""
    return [
        texts[start : start + GEMINI_MAX_BATCH_SIZE]
        for start in range(0, len(texts), GEMINI_MAX_BATCH_SIZE)
    ]


def merge_gemini_batch_responses(payloads: Sequence[Any]) -> dict[str, Any]:
    """Join the responses of `split_for_gemini` chunks into one batch response."""
    embeddings: list[Any] = []
    for payload in payloads:
        part = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(part, list):
            raise _bad_upstream("the Gemini batch response has no 'embeddings'")
        embeddings.extend(part)
    return {"embeddings": embeddings}


def embeddings_from_gemini_response(
    payload: Any, *, public_model: str, texts: list[str], requested_format: EncodingFormat
) -> tuple[dict[str, Any], TokenUsage]:
    entries = payload.get("embeddings") if isinstance(payload, dict) else None
    if not isinstance(entries, list) or len(entries) != len(texts):
        got = len(entries) if isinstance(entries, list) else "no"
        raise _bad_upstream(f"Gemini returned {got} embeddings for {len(texts)} inputs")
    vectors: list[list[float] | str] = []
    for position, entry in enumerate(entries):
        values = entry.get("values") if isinstance(entry, dict) else None
        if not isinstance(values, list) or not values:
            raise _bad_upstream(f"Gemini embeddings[{position}] has no 'values'")
        floats = _unit_length(values)
        vectors.append(_floats_to_base64(floats) if requested_format == "base64" else floats)
    # batchEmbedContents reports no usage, so bill an estimate: ~chars/4, at least 1 per input.
    prompt_tokens = sum(max(1, math.ceil(len(text) / GEMINI_CHARS_PER_TOKEN)) for text in texts)
    usage = TokenUsage(prompt_tokens=prompt_tokens)
    return _response(public_model, vectors, usage), usage


def _bare_gemini_model(upstream_model: str) -> str:
    return upstream_model.removeprefix("models/")


def _unit_length(values: list[Any]) -> list[float]:
    # OpenAI embeddings are unit vectors and clients rank by dot product. Gemini normalizes
    # only its full-size output, so vectors truncated via outputDimensionality are rescaled.
    try:
        floats = [float(value) for value in values]
    except (TypeError, ValueError) as exc:
        raise _bad_upstream("Gemini returned a non-numeric embedding value") from exc
    norm = math.hypot(*floats)
    if norm == 0.0 or not math.isfinite(norm):
        return floats
    return [value / norm for value in floats]


# --- shared -------------------------------------------------------------------------------------


def _response(
    public_model: str, vectors: list[list[float] | str], usage: TokenUsage
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ],
        "model": public_model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }


def _convert(embedding: Any, requested_format: EncodingFormat) -> list[float] | str:
    if isinstance(embedding, str):
        return embedding if requested_format == "base64" else _base64_to_floats(embedding)
    if isinstance(embedding, list):
        return _floats_to_base64(embedding) if requested_format == "base64" else embedding
    raise _bad_upstream("an embedding is neither a float array nor a base64 string")


def _floats_to_base64(values: Sequence[Any]) -> str:
    """Little-endian float32 bytes, standard base64: what the OpenAI SDKs decode."""
    try:
        packed = array("f", values)
    except TypeError as exc:
        raise _bad_upstream("an embedding holds non-numeric values") from exc
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _base64_to_floats(encoded: str) -> list[float]:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad_upstream("an embedding is not valid base64") from exc
    if len(raw) % 4:
        raise _bad_upstream("a base64 embedding is not a whole number of float32 values")
    packed = array("f")
    packed.frombytes(raw)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()


def _bad_upstream(detail: str) -> UpstreamError:
    message = f"The upstream provider sent an invalid embeddings response: {detail}."
    return UpstreamError(
        status=502,
        body=error_body(message, status=502, code="bad_upstream_response"),
        upstream_status=200,
    )
