"""The ASGI fast path for Twilio's webhooks: POST /sms/inbound and /sms/status are answered
here, in front of Django. A text arriving is stored without a thread, by one statement on
advice.fastpath's connections (sms.webhooks.handle_inbound_without_thread); everything else
(status callbacks, SQLite, a cold cache) takes one hop to a worker thread for the database.

Why: measured on this project's machine (docs/sms.md, "Benchmark"), Daphne alone costs about
0.8 ms of CPU per request (with advice.server_tuning), while Django's per-request stack
(request object, twelve middlewares, signals, the sync/async hops) costs several milliseconds
before the view runs: more than the webhook's own work, and enough to keep one process under
300 webhooks/s. These two endpoints need none of it: no session, no cookie, no CSRF (the
signature is their authentication), no template, no language. The checks are exactly the
Django views' own (sms.webhooks); the views still serve these paths wherever this wrapper is
not in front.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from sms.webhooks import PATHS, Answer, Webhook, handle, handle_inbound_without_thread

# Twilio's webhook bodies are a few kilobytes; Django refuses more than this too.
MAX_BODY = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440

SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


# The threads that answer webhooks (database work); a webhook holds one for a few milliseconds.
_workers = ThreadPoolExecutor(max_workers=6, thread_name_prefix="advice-webhook")


def _answer_in_thread(hook: Webhook) -> Answer:
    # What Django's request_started/request_finished signals do for a view: no connection
    # outlives its welcome (with psycopg's pool, it goes back to the pool).
    close_old_connections()
    try:
        return handle(hook)
    finally:
        close_old_connections()


class TwilioWebhooks:
    """ASGI middleware: the webhooks here, everything else to `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await self._send(send, Answer(413, b"request_too_large\n"))
                return
            if not message.get("more_body"):
                break
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        hook = Webhook(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            content_type=content_type.split(";", 1)[0].strip().lower(),
            body=bytes(body),
            signature=headers.get(b"x-twilio-signature", b"").decode("latin-1"),
        )
        answer = await handle_inbound_without_thread(hook)
        if answer is None:
            # A plain executor hop, not asgiref's sync_to_async: the handler needs none of its
            # context machinery, and at hundreds of webhooks a second that machinery was a
            # tenth of the server's CPU.
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(_workers, _answer_in_thread, hook)
        await self._send(send, answer)

    @staticmethod
    async def _send(send: Any, answer: Answer) -> None:
        headers = [
            (b"content-type", answer.content_type.encode()),
            (b"content-length", str(len(answer.body)).encode()),
            *SECURITY_HEADERS,
            *((name.lower().encode(), value.encode()) for name, value in answer.headers.items()),
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
