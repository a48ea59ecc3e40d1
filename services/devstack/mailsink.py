"""`python -m devstack.mailsink`: a local SMTP server that keeps every mail it receives, so
sign-up and password-reset mails can be read without any mail provider.

SMTP on AIG_MAILSINK_SMTP_PORT (2525); the mails, newest first, on AIG_MAILSINK_HTTP_PORT
(8025): an HTML page at `/`, JSON at `/messages` (`?to=` filters by recipient). Each mail is
also written to the Maildir AIG_MAILSINK_DIR (var/mail). Only ever bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import html
import mailbox
import os
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

MAX_KEPT = 1_000


class Inbox:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain", "html"))
        self.messages.insert(
            0,
            {
                "received_at": datetime.now(UTC).isoformat(),
                "from": str(parsed.get("From", "")),
                "to": [str(r) for r in envelope.rcpt_tos],
                "subject": str(parsed.get("Subject", "")),
                "text": body.get_content() if body is not None else "",
            },
        )
        del self.messages[MAX_KEPT:]
        # Opened per mail: the directory may have been cleaned away while the sink ran.
        for part in ("tmp", "new", "cur"):
            (self._directory / part).mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(self._directory, create=True).add(raw)
        return "250 Message accepted for delivery"


def http_app(inbox: Inbox) -> Starlette:
    def chosen(request: Request) -> list[dict[str, Any]]:
        to = request.query_params.get("to", "").lower()
        return [m for m in inbox.messages if not to or to in (r.lower() for r in m["to"])]

    async def listing(request: Request) -> Response:
        return JSONResponse({"data": chosen(request)})

    async def page(request: Request) -> Response:
        items = "".join(
            f"<article><h2>{html.escape(m['subject'])}</h2><p>to {html.escape(', '.join(m['to']))}"
            f" · {html.escape(m['received_at'])}</p><pre>{html.escape(m['text'])}</pre></article>"
            for m in chosen(request)
        )
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>aig mail sink</title>"
            "<style>body{font:16px system-ui;max-width:50rem;margin:2rem auto;padding:0 1rem}"
            "pre{white-space:pre-wrap;background:#f4f4f5;padding:1rem}</style>"
            f"<h1>Mail received by the local SMTP sink</h1>{items or '<p>No mail yet.</p>'}"
        )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/messages", listing),
            Route("/healthz", healthz),
            Route("/readyz", healthz),
        ]
    )


async def serve(smtp_port: int, http_port: int, directory: Path) -> None:
    inbox = Inbox(directory)
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(inbox), "127.0.0.1", smtp_port)
    config = uvicorn.Config(
        http_app(inbox), host="127.0.0.1", port=http_port, access_log=False, log_level="warning"
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        smtp.close()


def main() -> None:
    asyncio.run(
        serve(
            int(os.environ.get("AIG_MAILSINK_SMTP_PORT", "2525")),
            int(os.environ.get("AIG_MAILSINK_HTTP_PORT", "8025")),
            Path(os.environ.get("AIG_MAILSINK_DIR", "var/mail")),
        )
    )


if __name__ == "__main__":
    main()
