"""The ASGI entry point: HTTP through Django, WebSockets through Channels.

Both sockets sit behind the origin check (a page on another site cannot open them) and the
session middleware (the advisor's socket needs the OTP-verified session)."""

import os

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

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# Twilio's two webhooks are answered in front of Django's per-request stack (sms/asgi.py).
http_app = TwilioWebhooks(http_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        path("ws/chat/", VisitorConsumer.as_asgi()),
                        path("ws/advisor/", AdvisorConsumer.as_asgi()),
                        path("ws/interpreter/", InterpreterConsumer.as_asgi()),
                    ]
                )
            )
        ),
    }
)
