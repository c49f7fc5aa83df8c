import pytest

from tests.factories import START, advisor_socket, receive_until, visitor_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_visitor_and_an_advisor_talk(advisor):
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    started = await receive_until(visitor, "started")
    assert len(started["token"]) >= 22
    queue = await receive_until(visitor, "queue")
    assert queue["position"] == 1

    console, connected = await advisor_socket(advisor)
    assert connected
    waiting = await receive_until(console, "queue")
    assert len(waiting["waiting"]) == 1
    conversation_id = waiting["waiting"][0]["id"]

    await console.send_json_to({"type": "take", "conversation": conversation_id})
    await receive_until(visitor, "state", status="active")
    joined = await receive_until(visitor, "message")
    assert joined["event"] == "advisor_joined"

    await visitor.send_json_to({"type": "send", "client_id": "c1", "text": "hej"})
    ack = await receive_until(visitor, "ack")
    got = await receive_until(console, "message", conversation=conversation_id, seq=ack["seq"])
    assert got["text"] == "hej"

    await console.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "client_id": "a1",
            "text": "Hej! Jag heter Alice.",
        }
    )
    reply = await receive_until(visitor, "message", **{"from": "advisor"})
    assert reply["text"] == "Hej! Jag heter Alice."
    await visitor.disconnect()
    await console.disconnect()
