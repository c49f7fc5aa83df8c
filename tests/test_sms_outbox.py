"""The outbox under failure: the real twilio SDK against the local fake, which fails on
request. Transient failures are retried with backoff, permanent ones fail the answer with a
reason the advisor reads, a send whose outcome is unknown is never repeated blindly, and the
deletion at Twilio is retried until Twilio allows it."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client, TestCase

from advice.models import Conversation, Message
from sms import worker as worker_module
from sms.models import OutboundSms, SmsThread, TwilioDeletion
from sms.worker import Worker
from tests.twilio_peer import (
    inbound_fields,
    post_signed,
)

pytestmark = pytest.mark.django_db

SENDER = "+46701234567"


class Events(list):
    """The worker's publish: keeps what would go to the consoles."""

    def __call__(self, events):
        self.extend(events)


@pytest.fixture
def published():
    return Events()


@pytest.fixture
def worker(published):
    return Worker(publish=published, lease_seconds=30)


@pytest.fixture
def conversation(fake_twilio, advisor, worker):
    """An SMS conversation taken by the advisor."""
    response = post_signed(Client(), "/sms/inbound", inbound_fields(sender=SENDER, body="hej"))
    assert response.status_code == 200
    worker.run_until_idle()
    conversation = Conversation.objects.get()
    conversation.take(advisor)
    fake_twilio.reset()  # forget the deletion of the inbound text
    TwilioDeletion.objects.all().delete()
    return conversation


def answer(conversation, advisor, text="Hej! Vi hjälper dig.", committed=True):
    """The advisor's answer, with what runs once it has committed (the outbox's receiver), or
    without it (`committed=False`: the process stopped first)."""
    with TestCase.captureOnCommitCallbacks(execute=committed):
        message, _created, _events = conversation.post(
            sender=Message.Sender.ADVISOR,
            text=text,
            client_id=f"c{Message.objects.count()}",
            advisor=advisor,
        )
    return message


def test_an_answer_whose_process_stopped_before_its_outbox_rows_is_still_sent(
    conversation, advisor, worker, fake_twilio
):
    message = answer(conversation, advisor, committed=False)
    assert not OutboundSms.objects.exists()
    worker.run_until_idle()
    assert not fake_twilio.created()  # the receiver may still be on its way
    with later(1):
        worker.run_until_idle()
    [sent] = fake_twilio.created()
    assert sent["body"] == message.text
    assert OutboundSms.objects.get().message_id == message.pk


def later(minutes):
    return time_machine.travel(datetime.now(UTC) + timedelta(minutes=minutes), tick=True)


def test_an_answer_is_sent_once_through_the_sdk(conversation, advisor, worker, fake_twilio):
    message = answer(conversation, advisor)
    assert Message.objects.get(pk=message.pk).data["delivery"] == "queued"
    worker.run_until_idle()
    [sent] = fake_twilio.created()
    assert (sent["to"], sent["from"], sent["body"]) == (SENDER, "+46101234500", message.text)
    row = OutboundSms.objects.get()
    assert (row.status, row.twilio_sid, row.attempt_started_at) == ("queued", sent["sid"], None)
    worker.run_until_idle()
    assert len(fake_twilio.created()) == 1


def test_with_a_messaging_service_the_answer_is_sent_through_it(
    conversation, advisor, worker, fake_twilio, settings
):
    settings.TWILIO_MESSAGING_SERVICE_SID = "MG" + "3c" * 16
    answer(conversation, advisor)
    worker.run_until_idle()
    [create] = fake_twilio.creates()
    assert create.form["MessagingServiceSid"] == "MG" + "3c" * 16
    assert "From" not in create.form
    assert OutboundSms.objects.get().status == "accepted"


@pytest.mark.parametrize(
    ("fault", "in_doubt"),
    [
        ({"status": 500, "code": 20500}, True),
        ({"status": 503, "code": 20503}, True),
        ({"status": 429, "code": 20429}, False),
        ({"hang": 2.0}, True),  # longer than the client's timeout below: no answer at all
    ],
)
def test_a_transient_failure_is_retried_with_backoff_and_sent_once(
    conversation, advisor, worker, fake_twilio, settings, fault, in_doubt
):
    settings.TWILIO_HTTP_TIMEOUT_SECONDS = 0.5
    fake_twilio.fail_next("POST", **fault)
    message = answer(conversation, advisor)
    worker.run_until_idle()
    row = OutboundSms.objects.get()
    assert row.status == "pending"
    assert (row.attempt_started_at is not None) == in_doubt
    assert row.next_attempt_at > datetime.now(UTC)
    assert fake_twilio.created() == []
    worker.run_until_idle()  # not due yet: nothing happens
    assert len(fake_twilio.creates()) == 1

    with later(minutes=1):
        worker.run_until_idle()
    [sent] = fake_twilio.created()
    assert sent["body"] == message.text
    row.refresh_from_db()
    assert (row.status, row.twilio_sid, row.attempts) == ("queued", sent["sid"], 2)
    # A send in doubt first asked Twilio whether the text had gone out.
    asked = [r for r in fake_twilio.state.requests if r.method == "GET"]
    assert len(asked) == (1 if in_doubt else 0)


def test_an_answer_twilio_got_but_never_confirmed_is_not_sent_again(
    conversation, advisor, worker, fake_twilio, settings
):
    settings.TWILIO_HTTP_TIMEOUT_SECONDS = 0.5
    fake_twilio.fail_next("POST", hang=2.0, store_first=True)
    answer(conversation, advisor)
    worker.run_until_idle()
    [at_twilio] = fake_twilio.created()
    assert OutboundSms.objects.get().twilio_sid is None
    with later(minutes=1):
        worker.run_until_idle()
    assert len(fake_twilio.creates()) == 1
    assert fake_twilio.created() == [at_twilio]
    assert OutboundSms.objects.get().twilio_sid == at_twilio["sid"]


def test_the_same_words_sent_before_are_not_mistaken_for_the_answer_in_doubt(
    conversation, advisor, worker, fake_twilio, settings
):
    settings.TWILIO_HTTP_TIMEOUT_SECONDS = 0.5
    answer(conversation, advisor, "OK")
    worker.run_until_idle()
    fake_twilio.fail_next("POST", hang=2.0)
    answer(conversation, advisor, "OK")
    worker.run_until_idle()
    with later(minutes=1):
        worker.run_until_idle()
    assert [m["body"] for m in fake_twilio.created()] == ["OK", "OK"]
    assert OutboundSms.objects.exclude(twilio_sid=None).count() == 2


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (21211, "not a valid phone number"),
        (21610, "blocked texts"),
    ],
)
@pytest.mark.django_db(transaction=True)  # the domain publishes once committed
def test_a_permanent_error_fails_the_answer_and_tells_the_advisor_why(
    conversation, advisor, worker, published, fake_twilio, code, words, settings
):
    settings.LANGUAGE_CODE = "en"  # the reason is written in the service's language
    fake_twilio.fail_next("POST", status=400, code=code)
    message = answer(conversation, advisor)
    worker.run_until_idle()
    row = OutboundSms.objects.get()
    assert (row.status, row.error_code) == ("failed", str(code))
    [event] = [e for e in published if e["kind"] == "delivery"]
    assert event["seq"] == message.seq
    assert event["delivery"] == "failed"
    assert words in event["delivery_error"]
    message.refresh_from_db()
    assert message.data["delivery"] == "failed"
    assert message.data["delivery_error_code"] == str(code)
    with later(minutes=30):
        worker.run_until_idle()
    assert len(fake_twilio.creates()) == 1


@pytest.mark.django_db(transaction=True)  # the domain publishes once committed
def test_an_answer_is_given_up_after_the_last_attempt(
    conversation, advisor, worker, published, fake_twilio, monkeypatch
):
    monkeypatch.setattr(worker_module, "SEND_MAX_ATTEMPTS", 3)
    for _ in range(3):
        fake_twilio.fail_next("POST", status=503, code=20503)
    answer(conversation, advisor)
    for minutes in (0, 60, 120):
        with later(minutes=minutes):
            worker.run_until_idle()
    row = OutboundSms.objects.get()
    assert (row.status, row.error_code) == ("failed", "gave_up")
    assert published[-1]["delivery"] == "failed"


def test_a_later_text_of_a_thread_waits_for_an_earlier_one(
    conversation, advisor, worker, fake_twilio
):
    fake_twilio.fail_next("POST", status=429, code=20429)
    answer(conversation, advisor, "först")
    answer(conversation, advisor, "sedan")
    worker.run_until_idle()
    assert fake_twilio.created() == []
    with later(minutes=1):
        worker.run_until_idle()
    assert [m["body"] for m in fake_twilio.created()] == ["först", "sedan"]


def test_a_claim_left_by_a_dead_worker_is_taken_over_when_its_lease_runs_out(
    conversation, advisor, worker, fake_twilio
):
    answer(conversation, advisor)
    dead = Worker(publish=lambda events: None, lease_seconds=30)
    claimed = dead._claim_outbound(datetime.now(UTC))
    assert claimed is not None  # ... and the worker dies here, before sending
    worker.run_until_idle()
    assert fake_twilio.created() == []  # the lease still holds
    with later(minutes=1):
        worker.run_until_idle()
    assert len(fake_twilio.created()) == 1
    assert OutboundSms.objects.get().status == "queued"


def test_a_restarted_worker_sends_what_was_queued_before(conversation, advisor, fake_twilio):
    answer(conversation, advisor, "ett")
    answer(conversation, advisor, "två")
    Worker(publish=lambda events: None).run_until_idle()
    assert [m["body"] for m in fake_twilio.created()] == ["ett", "två"]


def test_answering_with_the_sms_channel_off_is_refused_and_stores_nothing(
    conversation, advisor, settings
):
    from advice.models import DomainError

    settings.SMS_ENABLED = False
    before = Message.objects.count()
    with pytest.raises(DomainError) as refused:
        answer(conversation, advisor)
    assert refused.value.code == "sms_off"
    assert Message.objects.count() == before
    assert OutboundSms.objects.count() == 0


# --- deletion at Twilio (point 10, T-8) ----------------------------------------------------------


def test_a_delivered_answer_is_deleted_at_twilio_retrying_while_twilio_says_not_yet(
    conversation, advisor, worker, fake_twilio
):
    answer(conversation, advisor)
    worker.run_until_idle()
    row = OutboundSms.objects.get()
    client = Client()
    from tests.twilio_peer import status_fields

    response = post_signed(
        client,
        f"/sms/status?o={row.public_id}",
        status_fields(sid=row.twilio_sid, status="delivered", to=SENDER),
    )
    assert response.status_code == 204
    fake_twilio.fail_next("DELETE", status=409, code=20009)
    worker.run_until_idle()
    deletion = TwilioDeletion.objects.get()
    assert (deletion.attempts, deletion.last_error) == (1, "20009")
    assert deletion.due_at >= datetime.now(UTC) + timedelta(seconds=45)
    assert len(fake_twilio.created()) == 1
    with later(minutes=5):
        worker.run_until_idle()
    assert fake_twilio.created() == []
    assert TwilioDeletion.objects.count() == 0


def test_a_text_already_gone_at_twilio_counts_as_deleted(fake_twilio, worker):
    TwilioDeletion.objects.create(message_sid="SM" + "4" * 32)
    fake_twilio.fail_next("DELETE", status=404, code=20404)
    worker.run_until_idle()
    assert TwilioDeletion.objects.count() == 0


def test_deleting_at_twilio_can_be_switched_off(
    conversation, advisor, worker, fake_twilio, settings
):
    settings.TWILIO_DELETE_MESSAGES = False
    post_signed(Client(), "/sms/inbound", inbound_fields(sender=SENDER, body="igen"))
    worker.run_until_idle()
    assert TwilioDeletion.objects.count() == 0
    assert fake_twilio.deletes() == []


def test_automatic_replies_are_deleted_at_twilio_once_final(sms_twilio_client, fake_twilio):
    from tests.twilio_peer import new_sid, status_fields

    sid = new_sid()
    fields = status_fields(sid=sid, status="sent", to=SENDER)
    assert post_signed(sms_twilio_client, "/sms/status?ack=1", fields).status_code == 204
    assert TwilioDeletion.objects.count() == 0
    fields = status_fields(sid=sid, status="delivered", to=SENDER)
    assert post_signed(sms_twilio_client, "/sms/status?ack=1", fields).status_code == 204
    assert TwilioDeletion.objects.get().message_sid == sid


@pytest.fixture
def sms_twilio_client():
    return Client()


def test_a_thread_keeps_the_number_encrypted(conversation):
    thread = SmsThread.objects.get()
    assert SENDER not in thread.sender
    assert thread.sender_number == SENDER
    assert len(thread.sender_hash) == 64


def test_an_undelivered_callback_fails_the_answer_with_the_operators_reason(
    conversation, advisor, worker, fake_twilio, settings
):
    settings.LANGUAGE_CODE = "en"
    from tests.twilio_peer import status_fields

    message = answer(conversation, advisor)
    worker.run_until_idle()
    row = OutboundSms.objects.get()
    response = post_signed(
        Client(),
        f"/sms/status?o={row.public_id}",
        status_fields(sid=row.twilio_sid, status="undelivered", to=SENDER, error_code="30003"),
    )
    assert response.status_code == 204
    message.refresh_from_db()
    assert message.data["delivery"] == "failed"
    assert "unreachable" in message.data["delivery_error"]
    # A "delivered" arriving after the failure does not revive it.
    post_signed(
        Client(),
        f"/sms/status?o={row.public_id}",
        status_fields(sid=row.twilio_sid, status="delivered", to=SENDER),
    )
    row.refresh_from_db()
    assert (row.status, row.error_code) == ("undelivered", "30003")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a" * 1600, 1),
        ("a" * 1601, 2),
        ("😀" * 800, 1),  # 1,600 UTF-16 units
        ("😀" * 801, 2),
        (("ord " * 1000).strip(), 3),
    ],
)
def test_answers_are_split_within_twilios_1600_character_limit(text, parts):
    from sms.outbox import split_text, utf16_length

    split = split_text(text)
    assert len(split) == parts
    assert all(utf16_length(part) <= 1600 for part in split)
    assert "".join(split).replace(" ", "") == text.replace(" ", "")


def test_the_question_to_twilio_about_a_send_in_doubt_passes_twilios_schema(
    twilio_api, advisor, worker
):
    """The list request (and its answer) of a send in doubt, through Prism when it runs."""
    post_signed(Client(), "/sms/inbound", inbound_fields(sender=SENDER, body="hej"))
    worker.run_until_idle()
    conversation = Conversation.objects.get()
    conversation.take(advisor)
    answer(conversation, advisor, "Svar i ovisshet")
    # A worker started the send and died before it knew the outcome.
    OutboundSms.objects.update(attempt_started_at=datetime.now(UTC))
    worker.run_until_idle()
    asked = [r for r in twilio_api.fake.state.requests if r.method == "GET"]
    assert len(asked) == 1
    assert "To=%2B46701234567" in asked[0].path
    assert [m["body"] for m in twilio_api.fake.created()] == ["Svar i ovisshet"]
    assert OutboundSms.objects.get().status == "queued"
