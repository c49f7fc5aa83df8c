"""GET /health/ for uptime monitors and load balancers: the database and Redis, each asked
once with a short timeout. 200 when both answer, 503 naming the part that does not; the
answer holds no address, name or error text."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

TIMEOUT_SECONDS = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _redis() -> None:
    import redis.asyncio

    client = redis.asyncio.from_url(
        settings.REDIS_URL, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _state(check) -> str:
    try:
        await asyncio.wait_for(check(), TIMEOUT_SECONDS)
    except Exception:
        return "failing"
    return "ok"


@never_cache
@require_safe
async def health(request: HttpRequest) -> JsonResponse:
    parts = {"database": await _state(sync_to_async(_database))}
    parts["redis"] = await _state(_redis) if settings.REDIS_URL else "not used"
    failing = [name for name, state in parts.items() if state == "failing"]
    return JsonResponse(
        {"status": "failing" if failing else "ok", **parts}, status=503 if failing else 200
    )
