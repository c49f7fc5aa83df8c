"""The Twilio webhooks at the door: signatures (T-1, T-2, T-3, T-10), methods and CSRF (T-6),
retries (T-4), and bad input answered as specified with nothing written."""

from urllib.parse import urlencode

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from twilio.request_validator import RequestValidator

from advice.models import Conversation, ConversationEvent, Message
from sms import provider
from sms.models import InboundSms, OutboundSms, SmsNumber, SmsOptOut, SmsThread, TwilioDeletion
from tests.twilio_peer import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BASE_URL,
    LINE_NUMBER,
    SECONDARY_TOKEN,
    inbound_fields,
    new_sid,
    post_signed,
    sign,
    status_fields,
)

pytestmark = pytest.mark.django_db

SENDER = "+46701234567"
MODELS = [
    Conversation,
    ConversationEvent,
    Message,
    InboundSms,
    OutboundSms,
    SmsThread,
    SmsOptOut,
    TwilioDeletion,
]


def row_counts():
    return {model.__name__: model.objects.count() for model in MODELS}


# --- signatures -----------------------------------------------------------------------------


def test_the_sdks_published_test_vector_holds_through_our_wrapper(settings):
    """T-1: twilio-python's own vector, checked by sms.provider.signature_is_valid."""
    settings.TWILIO_AUTH_TOKEN = "12345"
    settings.TWILIO_AUTH_TOKEN_SECONDARY = ""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    expected = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert RequestValidator("12345").compute_signature(url, params) == expected
    assert provider.signature_is_valid(url, params, expected)
    assert not provider.signature_is_valid(url, {**params, "Digits": "1235"}, expected)
    assert not provider.signature_is_valid(url, params, "")


def test_a_signed_text_is_accepted_with_every_field_twilio_sends(client, sms_on):
    fields = inbound_fields(sender=SENDER, body="Hej, jag är kurator och undrar en sak.")
    assert fields["ToState"] == ""  # empty geo fields are signed like the rest
    response = post_signed(client, "/sms/inbound", fields)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert InboundSms.objects.count() == 1


@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
@pytest.mark.parametrize(
    "case",
    [
        "unsigned",
        "wrong token",
        "garbage signature",
        "signed for another url",
        "signed for the request's own host",
        "changed body after signing",
    ],
)
def test_a_badly_signed_request_is_refused_with_403_and_writes_nothing(client, sms_on, path, case):
    """T-2, and a replayed signature with a changed body."""
    if path == "/sms/inbound":
        fields = inbound_fields(sender=SENDER, body="hej")
    else:
        fields = status_fields(sid=new_sid(), status="delivered", to=SENDER)
    kwargs = {}
    if case == "unsigned":
        kwargs["signature"] = ""
    elif case == "wrong token":
        kwargs["token"] = "not-the-auth-token"
    elif case == "garbage signature":
        kwargs["signature"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    elif case == "signed for another url":
        kwargs["url"] = "https://attacker.example" + path
    elif case == "signed for the request's own host":
        kwargs["url"] = "http://testserver" + path
    elif case == "changed body after signing":
        signature = sign(BASE_URL + path, fields)
        fields = {**fields, "Body" if "Body" in fields else "MessageStatus": "changed"}
        kwargs["signature"] = signature
    before = row_counts()
    response = post_signed(client, path, fields, **kwargs)
    assert response.status_code == 403
    assert b"invalid_signature" in response.content
    assert row_counts() == before


def test_the_signature_is_checked_against_the_configured_url_not_the_requests_host(client, sms_on):
    """T-3: spoofed Host and forwarded headers change nothing."""
    fields = inbound_fields(sender=SENDER, body="hej")
    response = post_signed(
        client,
        "/sms/inbound",
        fields,
        HTTP_HOST="localhost",
        headers={"X-Forwarded-Host": "attacker.example", "X-Forwarded-Proto": "http"},
    )
    assert response.status_code == 200
    forged = inbound_fields(sender=SENDER, body="hej")
    response = post_signed(
        client,
        "/sms/inbound",
        forged,
        url="http://attacker.example/sms/inbound",
        HTTP_HOST="localhost",
        headers={"X-Forwarded-Host": "attacker.example"},
    )
    assert response.status_code == 403
    assert InboundSms.objects.count() == 1


def test_the_query_string_is_part_of_the_signed_url(client, sms_on):
    fields = status_fields(sid=new_sid(), status="sent", to=SENDER)
    signed_without = sign(BASE_URL + "/sms/status", fields)
    response = post_signed(client, "/sms/status?ack=1", fields, signature=signed_without)
    assert response.status_code == 403
    response = post_signed(client, "/sms/status?ack=1", fields)
    assert response.status_code == 204


def test_during_a_token_rotation_both_tokens_are_accepted_and_no_other(client, sms_on, settings):
    """T-10."""
    settings.TWILIO_AUTH_TOKEN_SECONDARY = SECONDARY_TOKEN
    for token in (AUTH_TOKEN, SECONDARY_TOKEN):
        response = post_signed(
            client, "/sms/inbound", inbound_fields(sender=SENDER, body="hej"), token=token
        )
        assert response.status_code == 200
    response = post_signed(
        client,
        "/sms/inbound",
        inbound_fields(sender=SENDER, body="hej"),
        token="an-old-revoked-token",
    )
    assert response.status_code == 403
    settings.TWILIO_AUTH_TOKEN_SECONDARY = ""
    response = post_signed(
        client, "/sms/inbound", inbound_fields(sender=SENDER, body="hej"), token=SECONDARY_TOKEN
    )
    assert response.status_code == 403
    assert InboundSms.objects.count() == 2


def test_a_json_body_is_checked_against_its_signed_hash(client, sms_on):
    """The bodySHA256 pitfall: a replayed signed URL with another body must fail."""
    import hashlib

    body = '{"MessageSid": "x"}'
    path = "/sms/status?bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + path, {})
    replayed = client.post(
        path,
        '{"MessageSid": "y"}',
        content_type="application/json",
        headers={"X-Twilio-Signature": signature},
    )
    assert replayed.status_code == 403
    genuine = client.post(
        path, body, content_type="application/json", headers={"X-Twilio-Signature": signature}
    )
    # Signed right, but this service takes Twilio's form-encoded webhooks only.
    assert genuine.status_code == 415


def test_a_request_for_another_account_is_refused(client, sms_on):
    fields = {**inbound_fields(sender=SENDER, body="hej"), "AccountSid": "AC" + "2e" * 16}
    response = post_signed(client, "/sms/inbound", fields)
    assert response.status_code == 403
    assert InboundSms.objects.count() == 0


# --- methods, CSRF, switched off -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_the_webhooks_take_post_only(client, sms_on, path, method):
    """T-6."""
    response = getattr(client, method)(path)
    assert response.status_code == 405


def _views(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def test_the_twilio_webhooks_are_the_only_csrf_exempt_views():
    """T-6: enumerate the URLconf."""
    exempt = sorted(
        path
        for path, view in _views(get_resolver().url_patterns)
        if getattr(view, "csrf_exempt", False)
    )
    assert exempt == ["sms/inbound", "sms/status"]


@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
def test_with_the_sms_channel_off_the_webhooks_answer_404_and_write_nothing(client, settings, path):
    settings.SMS_ENABLED = False
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.TWILIO_WEBHOOK_BASE_URL = BASE_URL
    response = post_signed(client, path, inbound_fields(sender=SENDER, body="hej"))
    assert response.status_code == 404
    assert row_counts() == dict.fromkeys(row_counts(), 0)


# --- retries ---------------------------------------------------------------------------------


def test_the_same_message_sid_twice_is_stored_once_and_answered_2xx_both_times(client, sms_on):
    """T-4: the unique MessageSid in the database, not a check in Python."""
    fields = inbound_fields(sender=SENDER, body="hej")
    first = post_signed(client, "/sms/inbound", fields)
    again = post_signed(client, "/sms/inbound", fields)
    assert first.status_code == again.status_code == 200
    assert InboundSms.objects.filter(message_sid=fields["MessageSid"]).count() == 1
    # The retry gets no second acknowledgement.
    assert b"<Message" in first.content
    assert b"<Message" not in again.content


def test_the_message_sid_is_unique_in_the_database_itself():
    from django.db import IntegrityError, transaction

    InboundSms.objects.create(message_sid="SM" + "a" * 32, sender_hash="h", line_number="+1")
    with pytest.raises(IntegrityError), transaction.atomic():
        InboundSms.objects.create(message_sid="SM" + "a" * 32, sender_hash="h", line_number="+1")


# --- bad input ---------------------------------------------------------------------------------


def _without(fields, name):
    return {k: v for k, v in fields.items() if k != name}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: _without(f, "MessageSid"), "missing_field: MessageSid"),
        (lambda f: _without(f, "From"), "missing_field: From"),
        (lambda f: _without(f, "To"), "missing_field: To"),
        (lambda f: _without(f, "Body"), "missing_field: Body"),
        (lambda f: {**f, "MessageSid": "SM123"}, "invalid_field: MessageSid"),
        (lambda f: {**f, "MessageSid": "XX" + "a" * 32}, "invalid_field: MessageSid"),
        (lambda f: {**f, "From": "0701234567"}, "invalid_field: From"),
        (lambda f: {**f, "From": "whatsapp:+46701234567"}, "invalid_field: From"),
        (lambda f: {**f, "From": "+46 70 123 45 67"}, "invalid_field: From"),
        (lambda f: {**f, "To": "line"}, "invalid_field: To"),
        (lambda f: {**f, "NumMedia": "many"}, "invalid_field: NumMedia"),
        (lambda f: {**f, "NumMedia": "-1"}, "invalid_field: NumMedia"),
        (lambda f: {**f, "NumMedia": "11"}, "invalid_field: NumMedia"),
        (lambda f: {**f, "Body": "x" * 4001}, "body_too_long: Body"),
    ],
)
def test_malformed_or_missing_fields_get_400_and_write_nothing(client, sms_on, change, expected):
    fields = change(inbound_fields(sender=SENDER, body="hej"))
    before = row_counts()
    response = post_signed(client, "/sms/inbound", fields)
    assert response.status_code == 400
    assert response.content.decode().strip() == expected
    assert row_counts() == before


def test_a_very_long_body_is_refused_while_the_longest_text_fits(client, sms_on):
    response = post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="å" * 4000))
    assert response.status_code == 200
    huge = post_signed(client, "/sms/inbound", inbound_fields(sender=SENDER, body="x" * 3_000_000))
    assert huge.status_code == 413  # as Daphne answered it before the views served it
    assert InboundSms.objects.count() == 1


def test_a_text_to_a_number_that_is_not_the_lines_gets_404_and_writes_nothing(client, sms_on):
    SmsNumber.objects.create(number="+46101234599", county="M")
    before = row_counts()
    response = post_signed(
        client, "/sms/inbound", inbound_fields(sender=SENDER, body="hej", to="+46109999999")
    )
    assert response.status_code == 404
    assert b"unknown_number" in response.content
    assert row_counts() == before
    inactive = SmsNumber.objects.create(number="+46101234598", active=False)
    from sms import inbound

    inbound.forget_lines()
    response = post_signed(
        client, "/sms/inbound", inbound_fields(sender=SENDER, body="hej", to=inactive.number)
    )
    assert response.status_code == 404
    for line in ("+46101234599", LINE_NUMBER):
        fields = inbound_fields(sender=SENDER, body="hej", to=line)
        assert post_signed(client, "/sms/inbound", fields).status_code == 200


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"MessageSid": "nope", "MessageStatus": "sent"}, "invalid_field: MessageSid"),
        ({"MessageStatus": "sent"}, "invalid_field: MessageSid"),
        ({"MessageSid": "SM" + "b" * 32}, "invalid_field: MessageStatus"),
        (
            {"MessageSid": "SM" + "b" * 32, "MessageStatus": "teleported"},
            "invalid_field: MessageStatus",
        ),
        (
            {"MessageSid": "SM" + "b" * 32, "MessageStatus": "failed", "ErrorCode": "x1"},
            "invalid_field: ErrorCode",
        ),
    ],
)
def test_a_malformed_status_callback_gets_400_and_writes_nothing(client, sms_on, fields, expected):
    fields = {**fields, "AccountSid": ACCOUNT_SID}
    before = row_counts()
    response = post_signed(client, "/sms/status", fields)
    assert response.status_code == 400
    assert response.content.decode().strip() == expected
    assert row_counts() == before


def test_a_status_callback_with_a_malformed_outbox_id_gets_400(client, sms_on):
    fields = status_fields(sid=new_sid(), status="sent", to=SENDER)
    response = post_signed(client, "/sms/status?o=not-a-uuid", fields)
    assert response.status_code == 400


def test_a_status_callback_for_an_unknown_message_changes_nothing(client, sms_on):
    before = row_counts()
    response = post_signed(
        client, "/sms/status", status_fields(sid=new_sid(), status="delivered", to=SENDER)
    )
    assert response.status_code == 204
    assert row_counts() == before


def test_a_form_post_without_the_form_content_type_is_refused(client, sms_on):
    fields = inbound_fields(sender=SENDER, body="hej")
    signature = sign(BASE_URL + "/sms/inbound", {})
    response = client.post(
        "/sms/inbound",
        urlencode(fields),
        content_type="text/plain",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 415
    assert InboundSms.objects.count() == 0
