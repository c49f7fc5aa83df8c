"""The SMS channel end to end: a text arrives (signed webhook), the worker puts it in the
shared queue, the advisor's console shows it, the advisor answers, the worker sends the answer
through the real twilio SDK to Prism (validating against Twilio's OpenAPI description) in
front of the local fake, status callbacks bring delivery to the console live, and texts are
deleted at Twilio afterwards."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from channels.db import database_sync_to_async
from django.db import connections
from django.test import AsyncClient
from django.utils import translation

from advice.models import Conversation, ConversationEvent, Message
from sms.models import AutoReply, InboundSms, OutboundSms, SmsNumber, SmsOptOut, TwilioDeletion
from sms.worker import LoopPublisher, Worker
from tests.factories import advisor_socket, receive_until
from tests.twilio_peer import (
    BASE_URL,
    LINE_NUMBER,
    inbound_fields,
    post_signed,
    status_fields,
)

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "+46701234567"


async def text(body, *, sender=SENDER, to=LINE_NUMBER, num_media=0):
    """Twilio posts a text; returns the response."""
    fields = inbound_fields(sender=sender, body=body, to=to, num_media=num_media)
    response = await post_signed(AsyncClient(), "/sms/inbound", fields)
    assert response.status_code == 200
    return response


async def callback(sid, status, *, outbound=None, error_code="", to=SENDER):
    path = f"/sms/status?o={outbound.public_id}" if outbound else "/sms/status"
    fields = status_fields(sid=sid, status=status, to=to, error_code=error_code)
    response = await post_signed(AsyncClient(), path, fields)
    assert response.status_code == 204
    return response


async def frames_for(console, seconds):
    """Every frame the console gets within `seconds`."""
    frames = []
    while not await console.receive_nothing(timeout=seconds):
        frames.append(json.loads(await console.receive_from()))
    return frames


async def run_worker():
    """Run the worker until idle in a thread of its own, publishing on this test's loop, as
    the worker inside a Daphne process does (sms.worker.start_in_process)."""
    loop = asyncio.get_running_loop()

    def work():
        try:
            return Worker(publish=LoopPublisher(loop)).run_until_idle()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return await loop.run_in_executor(pool, work)


async def take_first_waiting(console):
    queue = await receive_until(console, "queue", timeout=5)
    while not queue["waiting"]:
        queue = await receive_until(console, "queue", timeout=5)
    summary = queue["waiting"][0]
    await console.send_json_to({"type": "take", "conversation": summary["id"]})
    taken = await receive_until(console, "conversation", timeout=5)
    assert taken["conversation"]["status"] == "active"
    return summary


async def test_a_text_reaches_the_queue_and_the_advisors_answer_reaches_the_phone(
    advisor, twilio_api
):
    await database_sync_to_async(SmsNumber.objects.create)(number=LINE_NUMBER, county="M")
    console, connected = await advisor_socket(advisor)
    assert connected

    response = await text("Hej! Jag är skolkurator och behöver råd om en elev.")
    # The first text of a new conversation is acknowledged at once, in Swedish for a Swedish
    # number, with the expected wait and 112; its status callbacks come back to /sms/status.
    reply = response.content.decode()
    assert "<Message" in reply and "112" in reply and "minuter" in reply
    assert f'action="{BASE_URL}/sms/status?ack=1"' in reply

    await run_worker()
    summary = await take_first_waiting(console)
    assert summary["channel"] == "sms"
    assert summary["writer"] == "professional"
    assert summary["county"] == "M"
    assert summary["contact"] == "•••• •• 67"
    first = await receive_until(
        console, "message", conversation=summary["id"], **{"from": "visitor"}
    )
    assert first["text"] == "Hej! Jag är skolkurator och behöver råd om en elev."

    await console.send_json_to(
        {
            "type": "send",
            "conversation": summary["id"],
            "client_id": "a1",
            "text": "Hej! Berätta mer om eleven.",
        }
    )
    ack = await receive_until(console, "ack")
    answer = await receive_until(console, "message", seq=ack["seq"], conversation=summary["id"])
    assert answer["delivery"] == "queued"

    await run_worker()
    [sent] = twilio_api.fake.created()
    assert sent["to"] == SENDER
    assert sent["from"] == LINE_NUMBER
    assert sent["body"] == "Hej! Berätta mer om eleven."
    outbound = await database_sync_to_async(OutboundSms.objects.get)()
    assert sent["_status_callback"] == f"{BASE_URL}/sms/status?o={outbound.public_id}"
    assert outbound.twilio_sid == sent["sid"]
    create = twilio_api.fake.creates()[-1]
    assert create.form["StatusCallback"] == sent["_status_callback"]
    assert create.authorization.startswith("Basic ")

    await callback(sent["sid"], "sent", outbound=outbound)
    frame = await receive_until(console, "delivery", conversation=summary["id"])
    assert frame == {
        "type": "delivery",
        "conversation": summary["id"],
        "seq": ack["seq"],
        "delivery": "sent",
        "delivery_error": None,
    }
    await callback(sent["sid"], "delivered", outbound=outbound)
    frame = await receive_until(console, "delivery", conversation=summary["id"])
    assert frame["delivery"] == "delivered"

    # Late and repeated callbacks change nothing (T-5).
    await callback(sent["sid"], "sent", outbound=outbound)
    await callback(sent["sid"], "delivered")
    assert [f for f in await frames_for(console, 0.3) if f["type"] == "delivery"] == []
    outbound = await database_sync_to_async(OutboundSms.objects.get)()
    assert outbound.status == "delivered"
    message = await database_sync_to_async(Message.objects.get)(pk=outbound.message_id)
    assert message.data["delivery"] == "delivered"

    # Both texts are deleted at Twilio: the received one once processed, the answer once
    # delivered (issue 3, point 10).
    inbound_sid = await database_sync_to_async(lambda: InboundSms.objects.get().message_sid)()
    await run_worker()
    deleted = {r.path.rsplit("/", 1)[-1].removesuffix(".json") for r in twilio_api.fake.deletes()}
    assert deleted == {inbound_sid, sent["sid"]}
    assert twilio_api.fake.created() == []
    assert await database_sync_to_async(TwilioDeletion.objects.count)() == 0
    await console.disconnect()


async def test_the_answer_is_queued_in_the_same_transaction_as_the_message(advisor, twilio_api):
    console, _ = await advisor_socket(advisor)
    await text("hej")
    await run_worker()
    summary = await take_first_waiting(console)
    await console.send_json_to(
        {"type": "send", "conversation": summary["id"], "client_id": "a1", "text": "Hej!"}
    )
    await receive_until(console, "ack")
    rows = await database_sync_to_async(list)(OutboundSms.objects.values_list("status", "part"))
    assert rows == [("pending", 1)]
    # A retried send with the same client id stores and sends nothing more.
    await console.send_json_to(
        {"type": "send", "conversation": summary["id"], "client_id": "a1", "text": "Hej!"}
    )
    await receive_until(console, "ack")
    assert await database_sync_to_async(OutboundSms.objects.count)() == 1
    await console.disconnect()


async def test_later_texts_continue_the_open_conversation_and_a_closed_one_starts_anew(
    advisor, twilio_api
):
    console, _ = await advisor_socket(advisor)
    await text("första")
    second = await text("andra")
    assert "<Message" not in second.content.decode()  # no second acknowledgement
    await run_worker()
    summary = await take_first_waiting(console)
    await receive_until(console, "message", conversation=summary["id"], text="andra")
    third = await text("tredje")
    assert "<Message" not in third.content.decode()
    await run_worker()
    await receive_until(console, "message", conversation=summary["id"], text="tredje")
    assert await database_sync_to_async(Conversation.objects.count)() == 1

    await console.send_json_to(
        {"type": "close", "conversation": summary["id"], "outcome": "advice_given"}
    )
    await receive_until(console, "conversation")
    fourth = await text("en ny fråga")
    assert "<Message" in fourth.content.decode()
    await run_worker()
    assert await database_sync_to_async(Conversation.objects.count)() == 2
    # Another sender is another conversation.
    await text("hej", sender="+46709876543")
    await run_worker()
    assert await database_sync_to_async(Conversation.objects.count)() == 3
    await console.disconnect()


async def test_stop_ends_the_conversation_and_nothing_is_sent_until_start(advisor, twilio_api):
    console, _ = await advisor_socket(advisor)
    await text("hej")
    await run_worker()
    summary = await take_first_waiting(console)

    stop = await text("Stopp")
    assert "<Message" not in stop.content.decode()
    await run_worker()
    ended = await receive_until(console, "conversation", timeout=5)
    while ended["conversation"]["status"] == "active":
        ended = await receive_until(console, "conversation", timeout=5)
    assert ended["conversation"]["end_reason"] == "opted_out"
    event = await database_sync_to_async(
        lambda: list(ConversationEvent.objects.filter(kind="ended").values_list("data", flat=True))
    )()
    assert event == [{"reason": "opted_out"}]
    assert await database_sync_to_async(SmsOptOut.objects.count)() == 1

    # They text again without START: the text reaches the queue, but answers are not sent.
    again = await text("en sak till")
    assert "<Message" not in again.content.decode()
    await run_worker()
    summary = await take_first_waiting(console)
    await receive_until(console, "message", conversation=summary["id"], text="en sak till")
    await console.send_json_to(
        {"type": "send", "conversation": summary["id"], "client_id": "b1", "text": "Vi hörs"}
    )
    await receive_until(console, "ack")
    await run_worker()
    failed = await receive_until(console, "delivery", conversation=summary["id"])
    assert failed["delivery"] == "failed"
    assert "STOP" in failed["delivery_error"]
    assert twilio_api.fake.created() == []

    await text("START")
    await run_worker()
    assert await database_sync_to_async(SmsOptOut.objects.count)() == 0
    await console.send_json_to(
        {"type": "send", "conversation": summary["id"], "client_id": "b2", "text": "Nu går det"}
    )
    await receive_until(console, "ack")
    await run_worker()
    assert [m["body"] for m in twilio_api.fake.created()] == ["Nu går det"]
    await console.disconnect()


@pytest.mark.parametrize("word", ["STOP", "stop", "AVSLUTA", " Stopp. "])
async def test_every_stop_word_opts_out(word, twilio_api):
    await text("hej")
    await text(word)
    await run_worker()
    conversation = await database_sync_to_async(Conversation.objects.get)()
    assert conversation.end_reason == "opted_out"
    assert await database_sync_to_async(SmsOptOut.objects.count)() == 1


async def test_an_mms_shows_how_many_items_were_attached_and_nothing_is_fetched(
    advisor, twilio_api
):
    console, _ = await advisor_socket(advisor)
    await text("", num_media=2)
    await run_worker()
    summary = await take_first_waiting(console)
    frame = await receive_until(
        console, "message", conversation=summary["id"], **{"from": "visitor"}
    )
    assert frame["attachments"] == 2
    assert frame["text"] == "(MMS)"
    # Only the deletion ever asked Twilio for anything: no media was downloaded.
    await run_worker()
    requests = twilio_api.fake.state.requests
    assert [r.method for r in requests] == ["DELETE"]
    assert "/Media" not in requests[0].path
    await console.disconnect()


async def test_an_advisor_with_the_right_sees_the_whole_number(advisor, twilio_api):
    from advice.models import AdvisorProfile

    await database_sync_to_async(AdvisorProfile.objects.filter(user=advisor).update)(
        can_see_phone_numbers=True
    )
    console, _ = await advisor_socket(advisor)
    await text("hej")
    await run_worker()
    console_frames = []
    queue = await receive_until(console, "queue", timeout=5)
    while not queue["waiting"]:
        queue = await receive_until(console, "queue", timeout=5)
    assert queue["waiting"][0]["contact"] == SENDER
    await console.send_json_to({"type": "take", "conversation": queue["waiting"][0]["id"]})
    taken = await receive_until(console, "conversation")
    assert taken["conversation"]["contact"] == SENDER
    assert console_frames == []
    await console.disconnect()


async def test_an_answer_over_1600_characters_goes_as_several_texts_in_order(advisor, twilio_api):
    console, _ = await advisor_socket(advisor)
    await text("hej")
    await run_worker()
    summary = await take_first_waiting(console)
    long_answer = " ".join(f"ord{n}" for n in range(800))  # about 5,000 characters
    long_answer = long_answer[:3990]
    await console.send_json_to(
        {"type": "send", "conversation": summary["id"], "client_id": "l1", "text": long_answer}
    )
    await receive_until(console, "ack")
    await run_worker()
    bodies = [m["body"] for m in twilio_api.fake.created()]
    assert len(bodies) == 3
    assert all(len(body) <= 1600 for body in bodies)
    assert " ".join(bodies) == long_answer
    await console.disconnect()


@time_machine.travel(datetime(2026, 11, 23, 20, 0, tzinfo=UTC), tick=False)  # a Monday evening
@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("+46701234567", "öppnar i morgon kl. 08:00"),
        ("+447700900123", "opens tomorrow at 08:00"),
    ],
)
async def test_outside_opening_hours_the_reply_says_when_the_line_opens_and_gives_112(
    twilio_api, sender, expected
):
    from advice.models import OpeningSchedule, WeeklyHours

    def hours():
        schedule = OpeningSchedule.objects.create(county="")
        WeeklyHours.objects.create(schedule=schedule, weekday=1, opens=time(8), closes=time(16))

    await database_sync_to_async(hours)()
    reply = (await text("hej", sender=sender)).content.decode()
    assert expected in reply
    assert "112" in reply


async def test_the_acknowledgement_is_edited_in_the_admin(twilio_api):
    from sms import replies

    await database_sync_to_async(AutoReply.objects.update_or_create)(
        kind="received",
        defaults={
            "text_sv": "Vi har fått ditt sms. Svar inom {wait}. Akut: 112.",
            "text_en": "We got your text. Within {wait}. Emergency: 112.",
        },
    )
    replies.clear_cache()
    reply = (await text("hej")).content.decode()
    assert "Vi har fått ditt sms. Svar inom 5 minuter. Akut: 112." in reply


@translation.override("en")
def test_an_automatic_reply_must_keep_112_outside_hours_and_its_one_placeholder():
    from django.core.exceptions import ValidationError

    closed = AutoReply(
        kind="closed",
        text_sv="Stängt, vi öppnar {opens}.",
        text_en="Closed, we open {opens}. Emergency: 112",
    )
    with pytest.raises(ValidationError, match="112"):
        closed.clean()
    received = AutoReply(
        kind="received",
        text_sv="Tack! Svar inom {wait}. Akut: 112",
        text_en="Thanks, we open {opens}. Emergency: 112",
    )
    with pytest.raises(ValidationError, match="placeholder"):
        received.clean()
    received.text_en = "Thanks, an advisor answers within {wait}. Emergency: 112"
    received.clean()


async def test_a_text_to_a_centres_own_number_opens_a_conversation_for_its_county(twilio_api):
    await database_sync_to_async(SmsNumber.objects.create)(number="+46101234511", county="O")
    await text("hej", to="+46101234511")
    await run_worker()
    conversation = await database_sync_to_async(Conversation.objects.get)()
    assert conversation.county == "O"
    assert conversation.channel == "sms"


async def test_a_received_text_keeps_no_copy_once_it_is_in_the_conversation(twilio_api):
    await text("något känsligt")
    row = await database_sync_to_async(InboundSms.objects.get)()
    assert row.body and "något" not in row.body  # ciphertext while it waits
    assert SENDER not in row.sender
    await run_worker()
    row = await database_sync_to_async(InboundSms.objects.get)()
    assert (row.body, row.sender) == ("", "")
    assert row.processed_at is not None
    assert row.processed_at - row.received_at < timedelta(minutes=1)
