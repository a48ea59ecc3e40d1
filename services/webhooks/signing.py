"""Signature headers of a callback: Standard Webhooks, and Kie's when the account opted in.

Standard Webhooks: `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, f"{id}.{ts}.{body}"))
where key is the base64 part of the `whsec_` secret; several signatures are separated by
spaces (the current and the previous secret during a rotation), and a receiver accepts the
message if any verifies. Kie: base64(HMAC-SHA256(key, f"{taskId}.{ts}")) — the body is not
signed — in `X-Webhook-Signature`, with `X-Webhook-Timestamp`.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

from controldb.webhooks import SECRET_PREFIX


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()


def kie_signature(hmac_key: str, task_id: str, timestamp: int) -> str:
    signed = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.digest(hmac_key.encode(), signed, "sha256")).decode()


def signature_headers(
    *,
    message_id: str,
    task_id: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
    kie_hmac_key: str | None,
) -> dict[str, str]:
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, message_id, timestamp, body) for secret in secrets
        ),
    }
    if kie_hmac_key:
        headers["X-Webhook-Timestamp"] = str(timestamp)
        headers["X-Webhook-Signature"] = kie_signature(kie_hmac_key, task_id, timestamp)
    return headers
