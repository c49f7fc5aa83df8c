"""The background worker: what the SMS channel does outside a request.

Three small steps, each safe to run in several processes at once and to kill at any moment:

1. `process_inbound`: put a stored inbound text into its conversation (sms.processing), in one
   transaction with the row locked; a crash rolls it back and the text is still waiting.
2. `send_outbound`: send one outbox row through the twilio SDK. The row is claimed with a
   lease; the send starts only after `attempt_started_at` is committed, so a row claimed again
   with it set and no sid is "in doubt" (the last worker died or timed out mid-send) and Twilio
   is asked whether the text went out before it is sent again: nothing lost, nothing twice.
   Transient failures (no answer, 5xx, 429, and 401/403/404 that a fixed configuration cures)
   are retried with exponential backoff; permanent ones (400 with e.g. 21211, 21610) fail the
   row and the advisor sees why.
3. `delete_at_twilio`: DELETE texts at Twilio once processed or final; 20009 ("not yet") and
   network failures are retried, 404 means it is gone already.

`manage.py worker` runs it in production (one or more processes; events reach the web
processes through the Redis channel layer). With the in-memory layer the worker must run inside
the one web process instead, or its events would reach no socket: `manage.py serve` arranges
that (see `start_in_process`).

Log lines name rows by id and errors by code or type; never a number, a text, or an
exception's message (Twilio's quote the number).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from twilio.base.exceptions import TwilioException, TwilioRestException

from advice.models import DomainError
from realtime import hub as realtime
from realtime.publish import holding
from sms import outbox, processing, provider
from sms.models import InboundSms, OutboundSms, SmsOptOut, TwilioDeletion
from sms.outbox import RANK, _wake_worker, record_status, refresh_delivery

logger = logging.getLogger(__name__)

Status = OutboundSms.Status
Publish = Callable[[list[dict[str, Any]]], None]

# Set by `manage.py serve` for the Daphne process it starts (sms.apps).
IN_PROCESS_ENV = "SMS_WORKER_IN_PROCESS"

POLL_SECONDS = 0.25
LEASE_SECONDS = 60
SEND_MAX_ATTEMPTS = 20  # about four hours of backoff
SEND_BACKOFF = (5, 900)  # first delay, longest delay (seconds)
INBOUND_BACKOFF = (2, 300)
DELETE_MAX_ATTEMPTS = 60  # about two weeks: Twilio may refuse until a text is final
DELETE_BACKOFF = (60, 6 * 3600)
# How far a Twilio clock may be behind ours when looking for a text sent in doubt.
CLOCK_SKEW = timedelta(minutes=2)
# Items per step before the loop looks at the other steps.
BATCH = 50

# requests' errors (timeouts, refused connections) are OSErrors.
NETWORK_ERRORS = (OSError, TwilioException)


def backoff(attempts: int, first: int, longest: int) -> timedelta:
    seconds = min(longest, first * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 (jitter)


def default_publish(events: list[dict[str, Any]]) -> None:
    if events:
        async_to_sync(realtime.publish)(events)


class LoopPublisher:
    """Publishes from the worker's thread on an event loop that keeps running: Daphne's (in
    process) or the worker process's own, so the channel layer keeps one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        future = asyncio.run_coroutine_threadsafe(realtime.publish(events), self.loop)
        try:
            future.result(timeout=10)
        except Exception as error:
            # Committed already; consoles catch up from the database when they resume.
            logger.warning("could not publish %d events (%s)", len(events), type(error).__name__)


class Worker:
    def __init__(
        self,
        publish: Publish | None = None,
        *,
        poll_seconds: float | None = None,
        lease_seconds: int | None = None,
    ) -> None:
        self.publish = publish if publish is not None else default_publish
        self.poll_seconds = POLL_SECONDS if poll_seconds is None else poll_seconds
        self.lease = timedelta(seconds=LEASE_SECONDS if lease_seconds is None else lease_seconds)

    # --- the loop ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Run each step until it has nothing to do (or BATCH items); returns items handled."""
        done = 0
        steps = (
            self.process_inbound,
            self.queue_forgotten,
            self.send_outbound,
            self.delete_at_twilio,
        )
        for step in steps:
            for _ in range(BATCH):
                # The domain publishes what the step committed; it goes out through this
                # worker's publish (the web process's loop, or Redis).
                with holding() as committed:
                    did_something = step()
                self.publish(committed)
                if not did_something:
                    break
                done += 1
        return done

    def run_until_idle(self, limit: int = 1000) -> int:
        """For tests and `worker --once`: run until nothing is due."""
        total = 0
        while total < limit:
            done = self.run_once()
            if not done:
                break
            total += done
        return total

    def run_forever(self, stop: threading.Event) -> None:
        logger.info("SMS worker started")
        while not stop.is_set():
            close_old_connections()
            try:
                done = self.run_once()
            except Exception as error:
                # The database away, most likely; everything is still in it when it is back.
                logger.warning("worker round failed (%s); retrying", type(error).__name__)
                done = 0
            if not done and not stop.is_set():
                _wake_worker.wait(self.poll_seconds)
                _wake_worker.clear()
        close_old_connections()
        logger.info("SMS worker stopped")

    # --- 1. inbound -------------------------------------------------------------------------

    def process_inbound(self) -> bool:
        now = timezone.now()
        # Texts from one sender go in order: a later one waits while an earlier one has not
        # been tried (one that keeps failing does not hold the rest up).
        earlier = InboundSms.objects.filter(
            sender_hash=OuterRef("sender_hash"),
            processed_at__isnull=True,
            id__lt=OuterRef("id"),
            attempts=0,
        )
        with transaction.atomic():
            row = (
                InboundSms.objects.filter(processed_at__isnull=True, next_attempt_at__lte=now)
                .exclude(Exists(earlier))
                .order_by("id")
                .select_for_update(skip_locked=True)
                .first()
            )
            if row is None:
                return False
            try:
                with transaction.atomic():
                    processing.process(row)
            except Exception as error:
                reason = error.code if isinstance(error, DomainError) else type(error).__name__
                attempts = row.attempts + 1
                InboundSms.objects.filter(pk=row.pk).update(
                    attempts=attempts,
                    last_error=reason[:40],
                    next_attempt_at=now + backoff(attempts, *INBOUND_BACKOFF),
                )
                logger.warning(
                    "inbound text %s not processed (%s), attempt %d; will retry",
                    row.pk,
                    reason,
                    attempts,
                )
                return True
        return True

    # --- 2. outbound ------------------------------------------------------------------------

    def send_outbound(self) -> bool:
        now = timezone.now()
        claimed = self._claim_outbound(now)
        if claimed is None:
            return False
        row, token, doubt_since = claimed
        self._send(row, token, doubt_since)
        return True

    def _claim_outbound(self, now: datetime) -> tuple[OutboundSms, str, datetime | None] | None:
        # An answer's texts go in order: a row waits while an earlier one of its thread is
        # still in the outbox.
        earlier = OutboundSms.objects.filter(
            thread=OuterRef("thread"), status=Status.PENDING, id__lt=OuterRef("id")
        )
        with transaction.atomic():
            row = (
                OutboundSms.objects.filter(status=Status.PENDING, next_attempt_at__lte=now)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .exclude(Exists(earlier))
                .select_related("thread")
                .order_by("id")
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if row is None:
                return None
            token = secrets.token_hex(16)
            OutboundSms.objects.filter(pk=row.pk).update(
                claimed_until=now + self.lease,
                claim_token=token,
                attempts=F("attempts") + 1,
                # Kept from an earlier attempt that ended in doubt: the window to search.
                attempt_started_at=Coalesce(F("attempt_started_at"), Value(now)),
            )
        return row, token, row.attempt_started_at

    def _send(self, row: OutboundSms, token: str, doubt_since: datetime | None) -> list[dict]:
        thread = row.thread
        if SmsOptOut.objects.filter(sender_hash=thread.sender_hash).exists():
            return self._fail(row, token, "opted_out")
        text = row.text
        number = thread.sender_number
        api = provider.client()
        if doubt_since is not None:
            try:
                found = self._find_sent(api, row, number, text, doubt_since)
            except TwilioRestException as error:
                return self._retry(row, token, keep_doubt=True, reason=provider.error_code(error))
            except NETWORK_ERRORS as error:
                return self._retry(row, token, keep_doubt=True, reason=type(error).__name__)
            if found is not None:
                logger.info("outbound %s had reached Twilio before; not sent again", row.pk)
                return self._accepted(row, token, *found)
        params: dict[str, Any] = {
            "to": number,
            "body": text,
            "status_callback": provider.status_callback_url(str(row.public_id)),
        }
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            params["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            # From the number the sender texted, so the answer arrives in the same thread.
            params["from_"] = thread.line_number
        try:
            message = api.messages.create(**params)
        except TwilioRestException as error:
            code = provider.error_code(error)
            if provider.is_permanent(error):
                return self._fail(row, token, code)
            # Twilio answered: with a 4xx nothing was created; a 5xx leaves it in doubt.
            return self._retry(row, token, keep_doubt=error.status >= 500, reason=code)
        except NETWORK_ERRORS as error:
            # No answer (a timeout, a dropped connection): Twilio may have the text.
            return self._retry(row, token, keep_doubt=True, reason=type(error).__name__)
        return self._accepted(
            row, token, message.sid, message.status, str(message.error_code or "")
        )

    def _find_sent(
        self, api: Any, row: OutboundSms, number: str, text: str, since: datetime
    ) -> tuple[str, str] | None:
        """Did an earlier attempt reach Twilio? Looks for this text to this number, created
        since the attempt began, that no other row of the thread has claimed."""
        known = set(
            OutboundSms.objects.filter(thread=row.thread)
            .exclude(twilio_sid=None)
            .values_list("twilio_sid", flat=True)
        )
        for message in api.messages.list(to=number, limit=50):
            created = message.date_created
            if (
                message.sid in known
                or not str(message.direction or "").startswith("outbound")
                or not isinstance(created, datetime)
                or created < since - CLOCK_SKEW
            ):
                continue
            if (message.body or "") == text:
                return message.sid, message.status
        return None

    def _accepted(
        self, row: OutboundSms, token: str, sid: str, status: Any, error_code: str = ""
    ) -> list[dict]:
        status = str(status or "")
        if status not in RANK or status == Status.PENDING:
            status = Status.ACCEPTED
        with transaction.atomic():
            OutboundSms.objects.filter(pk=row.pk, twilio_sid__isnull=True).update(twilio_sid=sid)
            OutboundSms.objects.filter(pk=row.pk, claim_token=token).update(
                claimed_until=None, claim_token="", attempt_started_at=None
            )
            row.twilio_sid = sid
            events = record_status(row, status, error_code=error_code, twilio_sid=sid)
        return events

    def _fail(self, row: OutboundSms, token: str, code: str) -> list[dict]:
        with transaction.atomic():
            failed = OutboundSms.objects.filter(
                pk=row.pk, claim_token=token, status=Status.PENDING
            ).update(
                status=Status.FAILED,
                error_code=code[:20],
                claimed_until=None,
                claim_token="",
                attempt_started_at=None,
                updated_at=timezone.now(),
            )
            events = refresh_delivery(row.message_id) if failed else []
        logger.warning("outbound %s failed permanently (%s)", row.pk, code)
        return events

    def _retry(self, row: OutboundSms, token: str, *, keep_doubt: bool, reason: str) -> list[dict]:
        attempts = row.attempts + 1
        if attempts >= SEND_MAX_ATTEMPTS:
            return self._fail(row, token, "gave_up")
        delay = backoff(attempts, *SEND_BACKOFF)
        OutboundSms.objects.filter(pk=row.pk, claim_token=token, status=Status.PENDING).update(
            claimed_until=None,
            claim_token="",
            next_attempt_at=timezone.now() + delay,
            attempt_started_at=F("attempt_started_at") if keep_doubt else None,
            updated_at=timezone.now(),
        )
        logger.warning(
            "outbound %s not sent (%s), attempt %d; retrying in %d s",
            row.pk,
            reason,
            attempts,
            delay.total_seconds(),
        )
        return []

    # --- 3. deletion at Twilio --------------------------------------------------------------

    def queue_forgotten(self) -> bool:
        """Answers committed without outbox rows (sms.outbox.queue_forgotten)."""
        return bool(outbox.queue_forgotten(timezone.now() - timedelta(days=1)))

    def delete_at_twilio(self) -> bool:
        now = timezone.now()
        with transaction.atomic():
            row = (
                TwilioDeletion.objects.filter(due_at__lte=now)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .order_by("due_at", "id")
                .select_for_update(skip_locked=True)
                .first()
            )
            if row is None:
                return False
            TwilioDeletion.objects.filter(pk=row.pk).update(
                claimed_until=now + self.lease, attempts=F("attempts") + 1
            )
        try:
            provider.client().messages(row.message_sid).delete()
        except TwilioRestException as error:
            if error.status == 404:
                row.delete()  # gone already
                return True
            self._retry_deletion(row, provider.error_code(error))
        except NETWORK_ERRORS as error:
            self._retry_deletion(row, type(error).__name__)
        else:
            row.delete()
        return True

    def _retry_deletion(self, row: TwilioDeletion, reason: str) -> None:
        attempts = row.attempts + 1
        if attempts >= DELETE_MAX_ATTEMPTS:
            logger.error(
                "deletion %s at Twilio given up after %d attempts (%s)", row.pk, attempts, reason
            )
            row.delete()
            return
        # 20009: Twilio deletes a text only once it is final; wait at least a minute.
        TwilioDeletion.objects.filter(pk=row.pk).update(
            claimed_until=None,
            last_error=reason[:40],
            due_at=timezone.now() + backoff(attempts, *DELETE_BACKOFF),
        )
        logger.info("deletion %s at Twilio not done yet (%s), attempt %d", row.pk, reason, attempts)


# --- running inside the web process ------------------------------------------------------------


def start_in_process() -> None:
    """Called from sms.apps in the Daphne process `manage.py serve` starts with the worker
    inside: once Twisted's reactor runs Daphne's event loop, start the worker in a thread that
    publishes on that loop (where this process's sockets listen)."""
    if "daphne.server" not in sys.modules:
        return
    from twisted.internet import reactor

    def start() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(publish=LoopPublisher(loop))
        thread = threading.Thread(
            target=worker.run_forever, args=(threading.Event(),), name="sms-worker", daemon=True
        )
        thread.start()

    reactor.callLater(0, start)


def wanted_in_process() -> bool:
    return os.environ.get(IN_PROCESS_ENV) == "1" and settings.SMS_ENABLED
