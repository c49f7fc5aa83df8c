"""A real Daphne process driven by a real WebSocket client (the `websockets` package): the
visitor's connection drops mid-conversation, and the resume gets exactly what was missed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect

from advice.models import Message
from tests.factories import START, session_cookie

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


async def open_visitor(server) -> ClientConnection:
    return await connect(f"{server.ws_url}/ws/chat/", origin=server.url, compression=None)


async def open_console(server, user) -> ClientConnection:
    cookie = await database_sync_to_async(session_cookie)(user)
    return await connect(
        f"{server.ws_url}/ws/advisor/",
        origin=server.url,
        compression=None,
        additional_headers=[("Cookie", cookie)],
    )


async def next_frame(ws: ClientConnection, frame_type: str, **match: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
        if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
            return frame


async def quiet_frames(ws: ClientConnection, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every frame until none has come for `quiet` seconds."""
    frames = []
    while True:
        try:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=quiet)))
        except TimeoutError:
            return frames


def drop(ws: ClientConnection) -> None:
    """The connection fails as on a phone going into a tunnel: the TCP socket goes away, with no
    WebSocket close handshake."""
    ws.transport.abort()


async def conversation_between(
    server, advisor
) -> tuple[ClientConnection, str, ClientConnection, str]:
    visitor = await open_visitor(server)
    await visitor.send(json.dumps(START))
    token = (await next_frame(visitor, "started"))["token"]
    console = await open_console(server, advisor)
    await next_frame(console, "hello")
    public_id = (await next_frame(console, "queue"))["waiting"][0]["id"]
    await console.send(json.dumps({"type": "take", "conversation": public_id}))
    await next_frame(console, "message", event="advisor_joined")
    await next_frame(visitor, "message", event="advisor_joined")
    return visitor, token, console, public_id


async def advisor_says(console: ClientConnection, public_id: str, client_id: str, text: str) -> int:
    await console.send(
        json.dumps(
            {
                "type": "send",
                "conversation": public_id,
                "client_id": client_id,
                "text": text,
            }
        )
    )
    return (await next_frame(console, "ack", client_id=client_id))["seq"]


@database_sync_to_async
def stored_texts() -> list[tuple[int, str, str]]:
    return [(m.seq, m.sender, m.text) for m in Message.objects.filter(event="").order_by("seq")]


async def test_a_dropped_visitor_resumes_with_its_last_seq_and_gets_exactly_what_it_missed(
    daphne_server,
    advisor,
):
    visitor, token, console, public_id = await conversation_between(daphne_server, advisor)

    # They talk.
    await visitor.send(json.dumps({"type": "send", "client_id": "v-1", "text": "Hej"}))
    assert (await next_frame(visitor, "ack"))["seq"] == 2
    assert (await next_frame(console, "message", seq=2))["text"] == "Hej"
    await advisor_says(console, public_id, "a-1", "Hej, jag heter Alice")
    last_seq = (await next_frame(visitor, "message", seq=3))["seq"]

    # The visitor's connection drops; the advisor goes on writing meanwhile.
    drop(visitor)
    missed = [
        await advisor_says(console, public_id, f"a-{n}", f"Är du kvar? {n}") for n in range(2, 5)
    ]
    assert missed == [4, 5, 6]

    again = await open_visitor(daphne_server)
    await again.send(json.dumps({"type": "resume", "token": token, "last_seq": last_seq}))
    frames = await quiet_frames(again)
    assert frames[0] == {"type": "state", "status": "active"}
    messages = [f for f in frames if f["type"] == "message"]
    assert [(m["seq"], m["text"]) for m in messages] == [
        (4, "Är du kvar? 2"),
        (5, "Är du kvar? 3"),
        (6, "Är du kvar? 4"),
    ]

    # And the conversation goes on, both ways, with nothing repeated.
    await again.send(json.dumps({"type": "send", "client_id": "v-2", "text": "Ja, här"}))
    assert (await next_frame(again, "ack"))["seq"] == 7
    assert (await next_frame(console, "message", seq=7))["text"] == "Ja, här"
    await advisor_says(console, public_id, "a-5", "Bra")
    later = [f for f in await quiet_frames(again) if f["type"] == "message"]
    assert [(m["seq"], m.get("text")) for m in later] == [(7, "Ja, här"), (8, "Bra")]
    await again.close()
    await console.close()


async def test_a_text_sent_as_the_connection_failed_and_sent_again_is_delivered_once(
    daphne_server,
    advisor,
):
    visitor, token, console, _public_id = await conversation_between(daphne_server, advisor)

    # Sent, and stored, but the connection dies before the visitor reads the ack.
    await visitor.send(json.dumps({"type": "send", "client_id": "lost-ack", "text": "Hjälp"}))
    assert (await next_frame(console, "message", seq=2))["text"] == "Hjälp"
    drop(visitor)
    # Sent into a connection that is already failing: it may or may not have got through.
    second = await open_visitor(daphne_server)
    await second.send(json.dumps({"type": "resume", "token": token, "last_seq": 1}))
    await next_frame(second, "state")
    await second.send(json.dumps({"type": "send", "client_id": "maybe", "text": "Snälla"}))
    drop(second)

    # The page reconnects and sends every text it has no ack for, with the same client ids.
    third = await open_visitor(daphne_server)
    await third.send(json.dumps({"type": "resume", "token": token, "last_seq": 1}))
    for client_id, text in (("lost-ack", "Hjälp"), ("maybe", "Snälla")):
        await third.send(json.dumps({"type": "send", "client_id": client_id, "text": text}))
    frames = await quiet_frames(third)
    acks = {f["client_id"]: f["seq"] for f in frames if f["type"] == "ack"}
    assert acks["lost-ack"] == 2
    assert acks["maybe"] == 3
    # Each text exactly once in the stream the visitor reads...
    own = [(f["seq"], f["client_id"]) for f in frames if f["type"] == "message"]
    assert own == [(2, "lost-ack"), (3, "maybe")]
    # ...in what the advisor gets (live from the failing connection or from the retry: once)...
    at_console = [f for f in await quiet_frames(console) if f["type"] == "message"]
    assert [(m["seq"], m["text"]) for m in at_console] == [(3, "Snälla")]
    # ...and in the database.
    assert await stored_texts() == [(2, "visitor", "Hjälp"), (3, "visitor", "Snälla")]
    await third.close()
    await console.close()
