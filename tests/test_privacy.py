"""Nothing that identifies a visitor is stored or logged (D-1, D-2, D-4), and message bodies are
encrypted at rest with keys that rotate."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, models
from websockets.asyncio.client import connect

from advice.models import Conversation, Message
from config.management.commands.serve import daphne_args
from tests.factories import START, advisor_socket, receive_until, session_cookie, visitor_socket
from tests.live import ROOT, Daphne, wait_for_port

IDENTIFYING_NAME = re.compile(r"(^|_)ip(_|$)|ip_?addr|remote_addr|user_agent|useragent|x_forwarded")


# --- D-1: nothing identifying in the schema --------------------------------------------------


def test_no_model_has_a_field_for_an_ip_address_or_a_user_agent():
    offenders = []
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if isinstance(field, models.GenericIPAddressField) or IDENTIFYING_NAME.search(
                field.name.lower()
            ):
                offenders.append(f"{model._meta.label}.{field.name}")
    assert offenders == []


def test_the_identifying_name_pattern_would_catch_the_usual_names():
    for name in ("ip", "ip_address", "client_ip", "remote_addr", "user_agent", "ipaddr"):
        assert IDENTIFYING_NAME.search(name), name
    for name in ("description", "recipient", "zip", "shipped"):
        assert not IDENTIFYING_NAME.search(name), name


# --- encryption at rest ----------------------------------------------------------------------


def raw_bodies() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT body FROM advice_message WHERE body <> '' ORDER BY seq")
        return [row[0] for row in cursor.fetchall()]


def post(conversation: Conversation, text: str) -> Message:
    message, _created, _events = conversation.post(sender=Message.Sender.VISITOR, text=text)
    return message


@pytest.mark.django_db(transaction=True)
async def test_message_bodies_are_ciphertext_in_the_database_and_decrypt_with_the_keys(settings):
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    await receive_until(visitor, "started")
    secret = "Min pappa säger att jag ska giftas bort i sommar"
    await visitor.send_json_to({"type": "send", "client_id": "c", "text": secret})
    await receive_until(visitor, "ack")
    await visitor.disconnect()

    [body] = await database_sync_to_async(raw_bodies)()
    assert secret not in body
    assert "giftas" not in body
    assert body.startswith("gAAAAA")  # a Fernet token
    keys = [Fernet(k.encode()) for k in settings.ENCRYPTION_KEYS]
    assert keys[0].decrypt(body.encode()).decode() == secret


def test_a_body_written_under_an_old_key_still_decrypts_after_a_new_key_is_put_first(
    db,
    settings,
):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    first = post(conversation, "skrivet med den gamla nyckeln")

    settings.ENCRYPTION_KEYS = [new, old]
    second = post(conversation, "skrivet med den nya nyckeln")
    assert Message.objects.get(pk=first.pk).text == "skrivet med den gamla nyckeln"
    assert Message.objects.get(pk=second.pk).text == "skrivet med den nya nyckeln"
    # New texts are written with the first key.
    old_body, new_body = raw_bodies()
    assert Fernet(new.encode()).decrypt(new_body.encode())
    assert Fernet(old.encode()).decrypt(old_body.encode())

    # Without the old key the old body cannot be read: that is what rotate_keys is for.
    settings.ENCRYPTION_KEYS = [new]
    with pytest.raises(ValueError, match="cannot be decrypted"):
        _ = Message.objects.get(pk=first.pk).text


def encrypted_columns_in_use(conversation: Conversation) -> dict[str, str]:
    """Put a value under the current key in every encrypted column this schema has besides
    message bodies; returns label -> plaintext, read back by `read_encrypted_columns`."""
    from advice import crypto

    written = {}
    if hasattr(Conversation, "note_body"):
        Conversation.objects.filter(pk=conversation.pk).update(
            note_body=crypto.encrypt("anteckning om samtalet")
        )
        written["note"] = "anteckning om samtalet"
    if apps.is_installed("sms"):
        from sms.models import InboundSms, SmsThread

        SmsThread.objects.create(
            conversation=conversation,
            sender_hash="h" * 64,
            sender=crypto.encrypt("+46701234567"),
            line_number="+46700000000",
        )
        InboundSms.objects.create(
            message_sid="SM" + "0" * 32,
            sender_hash="h" * 64,
            sender=crypto.encrypt("+46701234567"),
            line_number="+46700000000",
            body=crypto.encrypt("ett sms om hjälp"),
        )
        written.update({"thread": "+46701234567", "inbound": "+46701234567 ett sms om hjälp"})
    return written


def read_encrypted_columns(conversation: Conversation) -> dict[str, str]:
    from advice import crypto

    read = {}
    if hasattr(Conversation, "note_body"):
        read["note"] = crypto.decrypt(Conversation.objects.get(pk=conversation.pk).note_body)
    if apps.is_installed("sms"):
        from sms.models import InboundSms, SmsThread

        read["thread"] = crypto.decrypt(SmsThread.objects.get().sender)
        inbound = InboundSms.objects.get()
        read["inbound"] = f"{crypto.decrypt(inbound.sender)} {crypto.decrypt(inbound.body)}"
    return read


def test_rotate_keys_re_encrypts_everything_so_that_only_the_new_key_is_needed(db, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    texts = [f"text nummer {n}" for n in range(7)]
    for text in texts:
        post(conversation, text)
    others = encrypted_columns_in_use(conversation)
    # A plain column whose value merely looks like a token is not touched.
    Message.objects.filter(seq=1).update(client_id="gAAAAA-not-a-token")

    settings.ENCRYPTION_KEYS = [new, old]
    post(conversation, "redan med den nya")
    dry = _run_rotate("--dry-run", "--batch-size", "3")
    assert "advice.Message.body: 7 to re-encrypt, 1 already under the newest key" in dry
    assert not _readable_with(new, raw_bodies()[0]), "a dry run changed a body"

    out = _run_rotate("--batch-size", "3")
    assert "advice.Message.body: 7 re-encrypted, 1 already under the newest key" in out
    columns = {
        "note": ["advice.Conversation.note_body"],
        "thread": ["sms.SmsThread.sender"],
        "inbound": ["sms.InboundSms.sender", "sms.InboundSms.body"],
    }
    for column in (c for written in others for c in columns[written]):
        assert f"{column}: 1 re-encrypted" in out
    # Nothing but names and counts is printed.
    assert not any(text in out for text in texts)

    settings.ENCRYPTION_KEYS = [new]
    stored = [m.text for m in Message.objects.filter(event="").order_by("seq")]
    assert stored == [*texts, "redan med den nya"]
    assert all(_readable_with(new, body) for body in raw_bodies())
    assert read_encrypted_columns(conversation) == others
    assert Message.objects.get(seq=1).client_id == "gAAAAA-not-a-token"

    # Running it again changes nothing.
    again = _run_rotate()
    assert "advice.Message.body: 0 re-encrypted, 8 already under the newest key" in again


def test_rotate_keys_refuses_to_call_it_done_while_a_value_needs_a_key_that_is_gone(db, settings):
    lost, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [lost]
    conversation, _token, _events = Conversation.start_web(language="sv", writer="young")
    post(conversation, "med en nyckel som försvann")
    settings.ENCRYPTION_KEYS = [new]
    post(conversation, "med den nya")
    with pytest.raises(CommandError, match="1 value"):
        _run_rotate()


def _run_rotate(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("rotate_keys", *args, stdout=out)
    return out.getvalue()


def _readable_with(key: str, body: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(body.encode())
    except Exception:
        return False
    return True


# --- D-4: no message text and no token in any log line ---------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_whole_conversation_logs_no_message_text_and_no_token(
    advisor,
    other_advisor,
    caplog,
):
    caplog.set_level(logging.DEBUG)
    secrets = ["Jag är rädd för min bror", "Ring 112 om du är i fara", "ett svar till"]

    visitor = await visitor_socket()
    await visitor.send_json_to({**START, "safe_now": "no"})
    token = (await receive_until(visitor, "started"))["token"]
    await visitor.send_json_to({"type": "send", "client_id": "v1", "text": secrets[0]})
    await receive_until(visitor, "ack")
    console, _ = await advisor_socket(advisor)
    public_id = (await receive_until(console, "queue"))["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": public_id})
    await receive_until(console, "message", event="advisor_joined")
    await console.send_json_to(
        {"type": "send", "conversation": public_id, "client_id": "a1", "text": secrets[1]}
    )
    await receive_until(visitor, "message", text=secrets[1])
    # Error paths: a taken conversation, someone else's, texts too long or broken, a bad token.
    rival, _ = await advisor_socket(other_advisor)
    await rival.send_json_to({"type": "take", "conversation": public_id})
    await receive_until(rival, "error")
    await rival.send_json_to(
        {"type": "send", "conversation": public_id, "client_id": "r", "text": secrets[2]}
    )
    await receive_until(rival, "error")
    await visitor.send_json_to({"type": "send", "text": secrets[2] * 400})
    await receive_until(visitor, "error")
    await visitor.send_to(text_data='{"type":"send","text":"' + secrets[2] + '"')
    await receive_until(visitor, "error")
    stranger = await visitor_socket()
    await stranger.send_json_to({"type": "resume", "token": token + "x"})
    await receive_until(stranger, "error")
    # A resume with the real token, and the end.
    again = await visitor_socket()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 0})
    await receive_until(again, "message", text=secrets[1])
    await console.send_json_to({"type": "close", "conversation": public_id, "outcome": "other"})
    await receive_until(again, "state", status="closed")
    for socket in (visitor, console, rival, stranger, again):
        await socket.disconnect()

    # The capture sees the project's loggers (so a leak there would show).
    logging.getLogger("realtime.hub").debug("canary")
    assert "canary" in caplog.text
    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    for secret in secrets:
        assert secret not in logged
    assert token not in logged


# --- D-2: Daphne prints no client address ----------------------------------------------------


class DaphneAtDefaultVerbosity(Daphne):
    """The control: the same server and arguments, but Daphne's default verbosity (1)."""

    def start(self) -> DaphneAtDefaultVerbosity:
        args = daphne_args(host="127.0.0.1", port=self.port)
        args[args.index("-v") + 1] = "1"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", *args],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, log_path=self.log_path)
        return self


async def visit(server: Daphne, user) -> list[str]:
    """HTTP and WebSocket requests of every kind, each from a known client port, with a
    forged X-Forwarded-For; returns every address string a log could have printed."""
    addresses = []
    for path in ("/", "/chat/", "/does-not-exist/", "/advisor/"):
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        client.connect()
        addresses.append(f"127.0.0.1:{client.sock.getsockname()[1]}")
        client.request(
            "GET",
            path,
            headers={"X-Forwarded-For": "203.0.113.77", "User-Agent": "Probe/1.0 (identifying)"},
        )
        client.getresponse().read()
        client.close()
    cookie = await database_sync_to_async(session_cookie)(user)
    for route, headers in (("/ws/chat/", []), ("/ws/advisor/", [("Cookie", cookie)])):
        async with connect(
            f"{server.ws_url}{route}",
            origin=server.url,
            compression=None,
            additional_headers=[*headers, ("X-Forwarded-For", "203.0.113.77")],
            user_agent_header="Probe/1.0 (identifying)",
        ) as ws:
            addresses.append(f"127.0.0.1:{ws.local_address[1]}")
            if route == "/ws/chat/":
                await ws.send(json.dumps(START))
                assert json.loads(await ws.recv())["type"] == "started"
    return addresses


def printed_addresses(output: str, addresses: list[str]) -> list[str]:
    found = [a for a in addresses if a in output]
    found += [
        marker for marker in ("203.0.113.77", "Probe/1.0", "WSCONNECT", '"GET ') if marker in output
    ]
    return found


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
async def test_the_served_daphne_prints_no_client_address_for_http_or_websocket_requests(
    advisor,
):
    quiet = Daphne().start()  # as `manage.py serve` runs it
    try:
        addresses = await visit(quiet, advisor)
    finally:
        quiet.stop()
    assert "Serving on" in quiet.output()  # the capture works
    assert printed_addresses(quiet.output(), addresses) == []

    # The control: at Daphne's default verbosity the same requests do print addresses, so the
    # check above can fail.
    loud = DaphneAtDefaultVerbosity().start()
    try:
        addresses = await visit(loud, advisor)
        await asyncio.sleep(0.2)
    finally:
        loud.stop()
    assert printed_addresses(loud.output(), addresses)


def test_the_serve_command_runs_daphne_without_an_access_log_and_with_frame_limits():
    args = daphne_args(host="127.0.0.1", port=8000)
    assert args[args.index("-v") + 1] == "0"
    assert int(args[args.index("--websocket-max-message-size") + 1]) <= 1024 * 1024
    assert int(args[args.index("--websocket-max-frame-size") + 1]) <= 1024 * 1024
