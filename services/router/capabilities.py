"""What a chat request asks of a model, checked against the catalog before any upstream call.

Rejecting here gives the client one clear 400 instead of a provider-specific error (or,
worse, a provider silently dropping the image or the tools), and it costs nothing.
"""

from __future__ import annotations

from typing import Any

from aig_common.errors import APIError
from catalog.estimate import MAX_OUTPUT_PARAMS, chat_messages
from catalog.models import ChatModel

JSON_RESPONSE_FORMATS = frozenset({"json_object", "json_schema"})


def check_chat_request(body: dict[str, Any], model: ChatModel) -> None:
    """Raise APIError(400) when the request needs something `model` cannot do."""
    if not model.capabilities.vision:
        _reject_image_inputs(body, model)
    if not model.capabilities.tools:
        _reject_tools(body, model)
    if not model.capabilities.json:
        _reject_json_response_format(body, model)
    _check_max_output_tokens(body, model)


def _reject_image_inputs(body: dict[str, Any], model: ChatModel) -> None:
    for message_index, message in enumerate(chat_messages(body)):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part_index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                raise APIError(
                    400,
                    f"Model '{model.id}' does not support image inputs.",
                    param=f"messages[{message_index}].content[{part_index}]",
                    code="unsupported_value",
                )


def _reject_tools(body: dict[str, Any], model: ChatModel) -> None:
    # `functions` is the deprecated spelling of `tools`; both need function calling.
    for param in ("tools", "functions"):
        if body.get(param):
            raise APIError(
                400,
                f"Model '{model.id}' does not support tools (function calling).",
                param=param,
                code="unsupported_parameter",
            )


def _reject_json_response_format(body: dict[str, Any], model: ChatModel) -> None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in JSON_RESPONSE_FORMATS:
            raise APIError(
                400,
                f"Model '{model.id}' does not support JSON output (response_format type '{kind}').",
                param="response_format",
                code="unsupported_value",
            )


def _check_max_output_tokens(body: dict[str, Any], model: ChatModel) -> None:
    for param in MAX_OUTPUT_PARAMS:
        value = body.get(param)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise APIError(
                400,
                f"{param} must be a positive integer, got {value!r}.",
                param=param,
                code="invalid_value",
            )
        if value > model.max_output_tokens:
            raise APIError(
                400,
                f"{param} is too large: {value}. Model '{model.id}' supports at most "
                f"{model.max_output_tokens} output tokens.",
                param=param,
                code="invalid_value",
            )
