"""The worker as real processes: `manage.py worker` killed in the middle of a send and started
again loses nothing and sends nothing twice; and the worker inside a real Daphne process (the
embedded default) carries a text from the webhook to the advisor's console and the answer back
to the phone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlencode

import pytest
import websockets
from django.test import Client

from advice.models import Conversation, Message
from sms.models import InboundSms, OutboundSms
from tests.factories import session_cookie
from tests.live import ROOT, Daphne, child_env, free_port
from tests.twilio_peer import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BASE_URL,
    LINE_NUMBER,
    inbound_fields,
    post_signed,
    sign,
)

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

SENDER = "+46701234567"


def twilio_env(api_url: str, base_url: str = BASE_URL, **extra: str) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_WEBHOOK_BASE_URL": base_url,
        "TWILIO_FROM_NUMBER": LINE_NUMBER,
        "TWILIO_API_BASE_URL": api_url,
        **extra,
    }


class WorkerProcess:
    def __init__(self, api_url: str) -> None:
        self.env = child_env(**twilio_env(api_url, TWILIO_HTTP_TIMEOUT_SECONDS="60"))
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "worker", "--lease", "2", "--poll", "0.1"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """Like a crash: SIGKILL in the middle of whatever it does."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(condition, timeout: float = 20, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def queued_answer(fake_twilio, advisor):
    """A taken SMS conversation with the advisor's answer in the outbox."""
    from sms.worker import Worker

    post_signed(Client(), "/sms/inbound", inbound_fields(sender=SENDER, body="hej"))
    Worker(publish=lambda events: None).run_until_idle()
    fake_twilio.reset()
    conversation = Conversation.objects.get()
    conversation.take(advisor)
    conversation.post(
        sender=Message.Sender.ADVISOR,
        text="Hej, vi hjälper dig gärna.",
        client_id="a1",
        advisor=advisor,
    )
    return OutboundSms.objects.get()


@pytest.mark.parametrize("twilio_had_it", [True, False])
def test_a_worker_killed_mid_send_and_restarted_sends_the_answer_exactly_once(
    queued_answer, fake_twilio, twilio_had_it
):
    # Twilio holds the request open: the worker is in the middle of the send when it dies.
    # Either Twilio already has the text (its answer is lost with the worker), or not yet.
    fake_twilio.fail_next("POST", hang=30, store_first=twilio_had_it)
    first = WorkerProcess(fake_twilio.url).start()
    try:
        wait_for(lambda: fake_twilio.creates(), what="the worker's send")
        time.sleep(0.2)
        first.kill()
    finally:
        first.stop()
    row = OutboundSms.objects.get()
    assert (row.status, row.twilio_sid) == ("pending", None)
    assert row.attempt_started_at is not None  # in doubt
    assert len(fake_twilio.created()) == (1 if twilio_had_it else 0)

    second = WorkerProcess(fake_twilio.url).start()
    try:
        wait_for(
            lambda: OutboundSms.objects.exclude(twilio_sid=None).exists(),
            timeout=30,
            what="the restarted worker",
        )
    finally:
        second.stop()
    [message] = fake_twilio.created()
    assert message["body"] == "Hej, vi hjälper dig gärna."
    assert message["to"] == SENDER
    row.refresh_from_db()
    assert row.twilio_sid == message["sid"]
    assert row.status == "queued"
    assert len(fake_twilio.creates()) == (1 if twilio_had_it else 2)


def test_a_separate_worker_process_turns_stored_texts_into_conversations(fake_twilio):
    for body in ("ett", "två", "tre"):
        post_signed(Client(), "/sms/inbound", inbound_fields(sender=SENDER, body=body))
    assert Conversation.objects.count() == 0
    worker = WorkerProcess(fake_twilio.url).start()
    try:
        wait_for(
            lambda: not InboundSms.objects.filter(processed_at=None).exists(),
            what="the texts to be processed",
        )
        wait_for(lambda: len(fake_twilio.deletes()) == 3, what="the deletions at Twilio")
    finally:
        worker.stop()
    conversation = Conversation.objects.get()
    texts = [m.text for m in conversation.messages.order_by("seq")]
    assert texts == ["ett", "två", "tre"]


def test_inside_a_real_daphne_the_worker_carries_a_text_to_the_console_and_back(
    fake_twilio, advisor
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Daphne(port=port, SMS_WORKER_IN_PROCESS="1", **twilio_env(fake_twilio.url, base))
    server.start()
    try:
        fields = inbound_fields(sender=SENDER, body="Hej från en skolsköterska")
        request = urllib.request.Request(
            base + "/sms/inbound",
            data=urlencode(fields).encode(),
            method="POST",
            headers={
                "X-Twilio-Signature": sign(base + "/sms/inbound", fields),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert b"<Message" in response.read()
        asyncio.run(_advisor_answers(server, advisor))
        wait_for(lambda: fake_twilio.created(), what="the answer at Twilio")
        [message] = fake_twilio.created()
        assert (message["to"], message["body"]) == (SENDER, "Vi svarar här.")
        status = fake_twilio.created()[0]["_status_callback"]
        assert status.startswith(base + "/sms/status?o=")
    finally:
        server.stop()


async def _advisor_answers(server: Daphne, advisor) -> None:
    from channels.db import database_sync_to_async

    cookie = await database_sync_to_async(session_cookie)(advisor)
    async with websockets.connect(
        server.ws_url + "/ws/advisor/",
        origin=server.url,
        additional_headers={"Cookie": cookie},
    ) as console:

        async def frame(kind, **match):
            while True:
                got = json.loads(await asyncio.wait_for(console.recv(), 10))
                if got["type"] == kind and all(got.get(k) == v for k, v in match.items()):
                    return got

        queue = await frame("queue")
        while not queue["waiting"]:
            queue = await frame("queue")
        summary = queue["waiting"][0]
        assert summary["contact"] == "•••• •• 67"
        await console.send(json.dumps({"type": "take", "conversation": summary["id"]}))
        text = await frame("message", **{"from": "visitor"})
        assert text["text"] == "Hej från en skolsköterska"
        await console.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation": summary["id"],
                    "client_id": "x1",
                    "text": "Vi svarar här.",
                }
            )
        )
        await frame("ack")


def test_the_worker_command_says_so_when_the_sms_channel_is_off():
    env = child_env()
    for name in list(env):
        if name.startswith("TWILIO_"):
            env.pop(name)
    result = subprocess.run(
        [sys.executable, "manage.py", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "SMS channel is off" in result.stdout
