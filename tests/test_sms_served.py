"""The webhooks through the project's real ASGI application (asgi.py, Django's middleware and
the async views in sms/views.py), outside any test transaction, so that on PostgreSQL texts take
the fast path (sms.webhooks.handle_inbound_without_thread) as they do when served."""

from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator

from sms.models import InboundSms
from tests.twilio_peer import BASE_URL, inbound_fields, new_sid, sign, status_fields

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "+46701234567"
FORM = b"application/x-www-form-urlencoded; charset=utf-8"


def application():
    from asgi import application as app

    return app


async def post(path, fields, *, signature=None, url=None, headers=(), body=None, method="POST"):
    if signature is None:
        signature = sign(url or BASE_URL + path, fields)
    named = {name for name, _value in headers}
    defaults = [(b"content-type", FORM), (b"host", b"127.0.0.1")]
    all_headers = [*(h for h in defaults if h[0] not in named), *headers]
    if signature:
        all_headers.append((b"x-twilio-signature", signature.encode()))
    communicator = HttpCommunicator(
        application(),
        method,
        path,
        body=urlencode(fields).encode() if body is None else body,
        headers=all_headers,
    )
    response = await communicator.get_response(timeout=10)
    response["headers"] = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return response


async def stored():
    return await database_sync_to_async(InboundSms.objects.count)()


async def test_a_signed_text_is_stored_and_acknowledged(sms_on):
    response = await post("/sms/inbound", inbound_fields(sender=SENDER, body="hej"))
    assert response["status"] == 200
    assert response["headers"]["content-type"].startswith("text/xml")
    assert "no-store" in response["headers"]["cache-control"]
    assert response["headers"]["x-content-type-options"] == "nosniff"
    assert b"<Message" in response["body"]
    assert await stored() == 1


async def test_the_same_message_sid_twice_is_stored_once(sms_on):
    fields = inbound_fields(sender=SENDER, body="hej")
    first, again = await post("/sms/inbound", fields), await post("/sms/inbound", fields)
    assert (first["status"], again["status"]) == (200, 200)
    assert await stored() == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unsigned", 403),
        ("wrong token", 403),
        ("another url", 403),
        ("changed body", 403),
        ("malformed From", 400),
        ("missing Body", 400),
        ("unknown To", 404),
        ("not a form", 415),
        ("too large", 413),
    ],
)
async def test_bad_input_gets_the_same_answers_as_through_the_test_client(sms_on, case, expected):
    fields = inbound_fields(sender=SENDER, body="hej")
    kwargs = {}
    if case == "unsigned":
        kwargs["signature"] = ""
    elif case == "wrong token":
        kwargs["signature"] = sign(BASE_URL + "/sms/inbound", fields, token="nope")
    elif case == "another url":
        kwargs["url"] = "http://127.0.0.1/sms/inbound"
    elif case == "changed body":
        kwargs["signature"] = sign(BASE_URL + "/sms/inbound", fields)
        fields = {**fields, "Body": "ändrad"}
    elif case == "malformed From":
        fields = {**fields, "From": "whatsapp:+46701234567"}
    elif case == "missing Body":
        fields = {k: v for k, v in fields.items() if k != "Body"}
    elif case == "unknown To":
        fields = {**fields, "To": "+46109999999"}
    elif case == "not a form":
        kwargs["headers"] = [(b"content-type", b"application/json")]
        kwargs["signature"] = sign(BASE_URL + "/sms/inbound", {})
        kwargs["body"] = b'{"Body": "hej"}'
    elif case == "too large":
        kwargs["body"] = b"Body=" + b"x" * 3_000_000
    response = await post("/sms/inbound", fields, **kwargs)
    assert response["status"] == expected
    assert await stored() == 0


async def test_spoofed_host_and_forwarded_headers_do_not_change_the_signed_url(sms_on):
    response = await post(
        "/sms/inbound",
        inbound_fields(sender=SENDER, body="hej"),
        headers=[(b"x-forwarded-host", b"attacker.example"), (b"x-forwarded-proto", b"http")],
    )
    assert response["status"] == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_get_405(sms_on, method):
    response = await post("/sms/status", {}, method=method, body=b"")
    assert response["status"] == 405
    assert response["headers"]["allow"] == "POST"


async def test_with_the_sms_channel_off_the_webhooks_answer_404(settings):
    settings.SMS_ENABLED = False
    response = await post("/sms/inbound", inbound_fields(sender=SENDER, body="hej"))
    assert response["status"] == 404
    assert await stored() == 0


async def test_a_status_callback_is_answered_204(sms_on):
    response = await post(
        "/sms/status?ack=1", status_fields(sid=new_sid(), status="sent", to=SENDER)
    )
    assert response["status"] == 204


def hook_for(fields: dict[str, str]):
    from sms.webhooks import Webhook

    return Webhook(
        method="POST",
        path="/sms/inbound",
        query_string="",
        content_type="application/x-www-form-urlencoded",
        body=urlencode(fields).encode(),
        signature=sign(BASE_URL + "/sms/inbound", fields),
    )


async def test_once_the_admins_settings_are_cached_texts_are_stored_without_a_thread(sms_on):
    """The first text reads the line's numbers, the reply texts and the opening hours on a
    thread and caches them; on PostgreSQL the texts after it are stored by one statement on
    the event loop (sms.webhooks.handle_inbound_without_thread), with the same answers."""
    from django.db import connection

    from sms.webhooks import handle_inbound_without_thread

    first = inbound_fields(sender=SENDER, body="hej")
    assert b"<Message" in (await post("/sms/inbound", first))["body"]
    new_sender = inbound_fields(sender="+46709876543", body="en fråga")
    answer = await handle_inbound_without_thread(hook_for(new_sender))
    if connection.vendor != "postgresql":
        # SQLite has no such path: the thread answers, as for the first text.
        assert answer is None
        return
    # A new sender's first text is acknowledged; the first sender's next text is not.
    assert answer.status == 200 and b"<Message" in answer.body
    again = await handle_inbound_without_thread(
        hook_for(inbound_fields(sender=SENDER, body="och en sak till"))
    )
    assert again.status == 200 and b"<Message" not in again.body
    # Twilio retrying stores nothing more and sends no second reply.
    retried = await handle_inbound_without_thread(hook_for(new_sender))
    assert retried.status == 200 and b"<Message" not in retried.body
    # STOP from someone new gets no automatic reply either.
    stop = await handle_inbound_without_thread(
        hook_for(inbound_fields(sender="+46701112233", body="Stopp."))
    )
    assert stop.status == 200 and b"<Message" not in stop.body
    unknown = await handle_inbound_without_thread(
        hook_for(inbound_fields(sender=SENDER, body="hej", to="+46109999999"))
    )
    assert unknown.status == 404
    assert await stored() == 4
    # Stored as the thread stores them: encrypted, waiting for the worker.
    row = await database_sync_to_async(InboundSms.objects.get)(message_sid=new_sender["MessageSid"])
    assert row.processed_at is None and row.acknowledgement == "received"
    assert "fråga" not in str(row.body) and row.num_media == 0
