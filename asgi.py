"""The ASGI entry point: HTTP through Django, WebSockets through Channels.

Every socket sits behind the origin check (a page on another site cannot open them). Only the
advisor's socket goes through the session and auth middleware: it needs the OTP-verified
session. The visitor's and the interpreter's sockets carry no session and prove themselves
with a token inside a frame, so they skip both (no cookie read, no user looked up on the shared
database thread for every visitor who connects)."""

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "advice.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from advice.consumers import AdvisorConsumer  # noqa: E402
from chat.consumers import VisitorConsumer  # noqa: E402
from interpreter.consumers import InterpreterConsumer  # noqa: E402
from sms.asgi import TwilioWebhooks  # noqa: E402


def _skip_autobahn_log_formatting() -> None:
    """autobahn (under Daphne) formats the arguments of its debug log lines whether or not
    debug logging is on: it pretty-prints its whole configuration for every new WebSocket
    (`pformat` in `_connectionMade`) and highlights names and values for every frame sent
    (`hltype`, `hlval` in `sendData`). In a surge of arrivals that was a seventh of the
    server's CPU (docs/performance.md). In autobahn's protocol module those three only ever
    build log arguments; they now hand the value over as it is."""
    try:
        import autobahn.websocket.protocol as autobahn_protocol
    except ImportError:  # served by something other than Daphne
        return

    def as_it_is(value: Any, *_args: Any, **_kwargs: Any) -> Any:
        return value

    for name in ("pformat", "hltype", "hlval"):
        if hasattr(autobahn_protocol, name):
            setattr(autobahn_protocol, name, as_it_is)


_skip_autobahn_log_formatting()

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# Twilio's two webhooks are answered in front of Django's per-request stack (sms/asgi.py).
http_app = TwilioWebhooks(http_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            URLRouter(
                [
                    path("ws/chat/", VisitorConsumer.as_asgi()),
                    path("ws/advisor/", AuthMiddlewareStack(AdvisorConsumer.as_asgi())),
                    path("ws/interpreter/", InterpreterConsumer.as_asgi()),
                ]
            )
        ),
    }
)
