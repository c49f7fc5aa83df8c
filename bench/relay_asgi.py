"""The bare Channels relay the benchmark measures the project against, on the same Daphne, the
same settings and the same channel layer. Bench-only: it is never routed by the product's
asgi.py. A socket at /relay/<room>/ joins the group of its room; whatever it sends is passed,
untouched, to the other sockets of that group."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class RelayConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room = f"relay.{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(
            self.room, {"type": "relay.message", "text": text_data, "sender": self.channel_name}
        )

    async def relay_message(self, event: dict) -> None:
        if event["sender"] != self.channel_name:
            await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter([path("relay/<int:room>/", RelayConsumer.as_asgi())]),
    }
)
