"""No phone number and no message text in any log line (T-9, D-4), on every path of the SMS
channel, the failing ones included; and the webhook does no slow work in the request (T-7)."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from advice.models import Conversation, Message
from sms.models import InboundSms, OutboundSms, TwilioDeletion
from sms.worker import Worker
from tests.twilio_peer import (
    inbound_fields,
    new_sid,
    post_signed,
    status_fields,
)

pytestmark = pytest.mark.django_db

SENDER = "+46701234567"
OTHER_SENDER = "+46709998877"
SECRETS = [
    "701234567",
    "709998877",  # the numbers, in any format
    "kurator",
    "hedersvåld",
    "Mormor",
    "svar-från-rådgivaren",
    "bilder",
]


def leaked(records):
    found = []
    for record in records:
        texts = [record.getMessage(), record.exc_text or "", str(record.args or "")]
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
        for text in texts:
            found += [(record.name, s) for s in SECRETS if s in text]
    return found


def test_no_number_or_text_reaches_a_log_line_on_any_path(caplog, fake_twilio, advisor, settings):
    caplog.set_level(logging.DEBUG)
    settings.TWILIO_HTTP_TIMEOUT_SECONDS = 0.5
    client = Client()
    worker = Worker(publish=lambda events: None)

    # Inbound: a new conversation, a continuation, a retry, an MMS, bad input of every kind.
    fields = inbound_fields(sender=SENDER, body="Jag är kurator, det gäller hedersvåld")
    assert post_signed(client, "/sms/inbound", fields).status_code == 200
    assert post_signed(client, "/sms/inbound", fields).status_code == 200
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="Mormor", num_media=2))
    post_signed(
        client, "/sms/inbound", inbound_fields(sender=SENDER, body="kurator"), signature="wrong"
    )
    post_signed(
        client,
        "/sms/inbound",
        inbound_fields(sender=SENDER, body="kurator"),
        url="https://attacker.example/sms/inbound",
    )
    post_signed(
        client,
        "/sms/inbound",
        {**inbound_fields(sender=SENDER, body="kurator"), "From": "0701234567"},
    )
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="kurator" * 600))
    post_signed(
        client, "/sms/inbound", inbound_fields(sender=SENDER, body="kurator", to="+46109999999")
    )
    client.get("/sms/inbound")
    worker.run_until_idle()

    # A text whose stored copy cannot be read: the worker's error path.
    broken = inbound_fields(sender=OTHER_SENDER, body="bilder")
    post_signed(client, "/sms/inbound", broken)
    InboundSms.objects.filter(message_sid=broken["MessageSid"]).update(body="not-ciphertext")
    worker.run_until_idle()

    # Outbound: sent, failed for good, retried after a 500, a timeout and a 429, in doubt.
    conversation = Conversation.objects.get(sms_thread__isnull=False, status="waiting")
    conversation.take(advisor)
    for n, fault in enumerate(
        [
            None,
            {"status": 400, "code": 21211},
            {"status": 500, "code": 20500},
            {"hang": 2.0},
            {"status": 429, "code": 20429},
            {"hang": 2.0, "store_first": True},
        ]
    ):
        if fault:
            fake_twilio.fail_next("POST", **fault)
        conversation.post(
            sender=Message.Sender.ADVISOR,
            text=f"svar-från-rådgivaren {n}",
            client_id=f"a{n}",
            advisor=advisor,
        )
        worker.run_until_idle()
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=5), tick=True):
            worker.run_until_idle()

    # Status callbacks: forward, backward, repeated, failed with a code, for unknown texts.
    for row in OutboundSms.objects.exclude(twilio_sid=None):
        for status in ("sent", "delivered", "sent", "delivered"):
            post_signed(
                client,
                f"/sms/status?o={row.public_id}",
                status_fields(sid=row.twilio_sid, status=status, to=SENDER),
            )
    post_signed(
        client,
        "/sms/status",
        status_fields(sid=new_sid(), status="undelivered", to=SENDER, error_code="30003"),
    )
    post_signed(
        client, "/sms/status?ack=1", status_fields(sid=new_sid(), status="delivered", to=SENDER)
    )
    post_signed(
        client,
        "/sms/status",
        status_fields(sid=new_sid(), status="sent", to=SENDER),
        signature="wrong",
    )

    # STOP, an answer refused for it, START.
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="STOPP"))
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="kurator igen"))
    worker.run_until_idle()
    again = Conversation.objects.filter(status="waiting").order_by("-id").first()
    again.take(advisor)
    again.post(
        sender=Message.Sender.ADVISOR,
        text="svar-från-rådgivaren efter stopp",
        client_id="s1",
        advisor=advisor,
    )
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="START"))
    worker.run_until_idle()

    # Deletion at Twilio: not yet (20009), gone already (404), no answer.
    fake_twilio.fail_next("DELETE", status=409, code=20009)
    fake_twilio.fail_next("DELETE", status=404, code=20404)
    fake_twilio.fail_next("DELETE", hang=2.0)
    for _ in range(3):
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=2), tick=True):
            worker.run_until_idle()

    assert OutboundSms.objects.filter(status="failed").exists()
    assert TwilioDeletion.objects.count() == 0
    assert any(r.name == "sms.worker" for r in caplog.records)  # the paths did log
    assert leaked(caplog.records) == []


def test_the_webhook_only_stores_the_text_and_leaves_the_rest_to_the_worker(
    fake_twilio, django_assert_max_num_queries
):
    """T-7 without a stopwatch: no conversation, no call to Twilio, a handful of queries."""
    client = Client()
    post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="värmer upp"))
    with django_assert_max_num_queries(8):
        response = post_signed(
            client, "/sms/inbound", inbound_fields(sender=OTHER_SENDER, body="hej")
        )
    assert response.status_code == 200
    assert InboundSms.objects.count() == 2
    assert Conversation.objects.count() == 0
    assert fake_twilio.state.requests == []
