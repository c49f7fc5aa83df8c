"""The WebSocket origin check: a socket opens only from the service's own pages.

A browser sends the page's origin with the handshake, and the cookie of the host whatever the
port, so a page on another port or scheme of the same host (the same site, for SameSite)
could otherwise open the advisor's socket with the advisor's session. The origin must be
exactly the scheme, host and port the browser connected to (`https` when HTTPS is on), on a
host in ALLOWED_HOSTS, or one of TRUSTED_ORIGINS (for a proxy that changes the Host).
Anything else is refused with 403 at the handshake."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def allowed(scope: dict[str, Any]) -> bool:
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1").lower()
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if not origin:
        return False
    if origin in settings.TRUSTED_ORIGINS:
        return True
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if settings.HTTPS else "http"
    return origin == f"{scheme}://{host}"


class SameOriginOnly:
    """ASGI middleware for the WebSocket router."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
