"""The ASGI entry point: HTTP through Django, WebSockets through Channels.

Every socket sits behind the origin check (config/origins.py: only the service's own pages,
scheme, host and port, can open them). Only the advisor's socket goes through the session and
auth middleware: it needs the OTP-verified session. The visitor's and the interpreter's
sockets carry no session and prove themselves with a token inside a frame, so they skip both
(no cookie read, no user looked up on the shared database thread for every visitor who
connects)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from advice import server_tuning  # noqa: E402
from chat.consumers import VisitorConsumer  # noqa: E402
from config.origins import SameOriginOnly  # noqa: E402
from console.consumers import AdvisorConsumer  # noqa: E402
from interpreter.consumers import InterpreterConsumer  # noqa: E402

# Fewer full garbage collections (advice/server_tuning.py).
server_tuning.collect_old_objects_less_often()

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": SameOriginOnly(
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

# Everything loaded so far lives as long as the process: the collector stops going through it.
server_tuning.freeze_startup_objects()
