"""The SMS channel's records. The conversation itself lives in advice.models; these rows say
where its texts came from and where its answers go, and carry the work that happens outside a
request: inbound texts waiting to be put into conversations, answers waiting to be sent, and
texts waiting to be deleted at Twilio.

Phone numbers are personal data: stored only as Fernet ciphertext (advice.crypto.encrypt), with
a keyed hash (advice.crypto.keyed_hash) wherever a row must be found by number. Bodies are
ciphertext too, and the copies kept for the worker are emptied once they have done their job.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from advice import crypto
from advice.choices import COUNTIES
from advice.models import Conversation, Message
from sms.config import E164

PHONE_HASH_PURPOSE = "sms-phone"


def phone_hash(number: str) -> str:
    """The keyed hash a sender's number is found by (threading, opt-outs)."""
    return crypto.keyed_hash(number, PHONE_HASH_PURPOSE)


class SmsNumber(models.Model):
    """One of the line's own numbers that texts arrive at. Each resource centre can have its
    own, so a text's county follows from the number it was sent to."""

    number = models.CharField(
        _("number"),
        max_length=16,
        unique=True,
        validators=[RegexValidator(E164, _("Give the number in E.164 form, e.g. +46701234567."))],
        help_text=_("In E.164 form, e.g. +46701234567, exactly as in the Twilio console."),
    )
    county = models.CharField(
        _("county"),
        max_length=4,
        blank=True,
        choices=COUNTIES,
        help_text=_("Texts to this number open conversations for this county."),
    )
    active = models.BooleanField(
        _("receives texts"),
        default=True,
        help_text=_("Texts to an inactive number are refused (Twilio logs the refusal)."),
    )

    class Meta:
        verbose_name = _("SMS number")
        verbose_name_plural = _("SMS numbers")
        ordering = ["number"]

    def __str__(self) -> str:
        return self.number


class AutoReply(models.Model):
    """The automatic acknowledgement of the first text of a new conversation (a TwiML reply).

    Senders with a Swedish number get the Swedish text, others the English one. Placeholders:
    {wait} (about how long until an advisor answers) in the "received" reply, {opens} (when
    the line opens) in the "closed" reply."""

    class Kind(models.TextChoices):
        RECEIVED = "received", _("Received, the line is open")
        CLOSED = "closed", _("Received, outside opening hours")

    PLACEHOLDERS = {Kind.RECEIVED: "{wait}", Kind.CLOSED: "{opens}"}

    kind = models.CharField(_("when"), max_length=10, choices=Kind.choices, unique=True)
    text_sv = models.TextField(_("text in Swedish"), max_length=600)
    text_en = models.TextField(_("text in English"), max_length=600)

    class Meta:
        verbose_name = _("automatic SMS reply")
        verbose_name_plural = _("automatic SMS replies")
        ordering = ["kind"]

    def __str__(self) -> str:
        return str(self.get_kind_display())

    def clean(self) -> None:
        placeholder = self.PLACEHOLDERS.get(self.kind, "")
        errors: dict[str, Any] = {}
        for name in ("text_sv", "text_en"):
            text = getattr(self, name) or ""
            stripped = text.replace(placeholder, "") if placeholder else text
            if "{" in stripped or "}" in stripped:
                errors[name] = _("The only placeholder this text can use is %(p)s.") % {
                    "p": placeholder
                }
            elif self.kind == self.Kind.CLOSED and "112" not in text:
                # Safety first: a text that says the line is closed always gives 112.
                errors[name] = _("Outside opening hours the reply must give the number 112.")
        if errors:
            raise ValidationError(errors)


class SmsThread(models.Model):
    """The SMS side of one conversation: whose number the advisor's answers go to, and which
    of the line's numbers they go from (the one the sender texted)."""

    conversation = models.OneToOneField(Conversation, models.CASCADE, related_name="sms_thread")
    sender_hash = models.CharField(max_length=64, db_index=True)
    sender = models.TextField()  # ciphertext of the E.164 number
    line_number = models.CharField(max_length=16)
    # The sender's hash while this is the thread their next text continues, else NULL. Unique,
    # so two workers can never open two conversations for one sender at once.
    current_for = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"SMS thread of {self.conversation}"

    @property
    def sender_number(self) -> str:
        return crypto.decrypt(self.sender)


class SmsOptOut(models.Model):
    """A sender who texted STOP (STOPP, AVSLUTA): nothing is sent to them until they text
    START. Keyed by the number's hash; the number itself is not kept here."""

    sender_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("SMS opt-out")
        verbose_name_plural = _("SMS opt-outs")

    def __str__(self) -> str:
        return f"opt-out {self.sender_hash[:8]}"


class InboundSms(models.Model):
    """A text as the webhook received it, until the worker has put it into a conversation.

    The webhook stores this one row and answers; everything slower happens in the worker. The
    unique MessageSid is what makes a Twilio retry of the same text store nothing new."""

    message_sid = models.CharField(max_length=34, unique=True)
    sender_hash = models.CharField(max_length=64)
    sender = models.TextField(blank=True)  # ciphertext; emptied once processed
    line_number = models.CharField(max_length=16)
    body = models.TextField(blank=True)  # ciphertext; emptied once processed
    num_media = models.PositiveSmallIntegerField(default=0)
    # The automatic reply the webhook answered with ("" for none).
    acknowledgement = models.CharField(max_length=10, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    message = models.ForeignKey(Message, models.SET_NULL, null=True, blank=True, related_name="+")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=40, blank=True)

    class Meta:
        indexes = [
            # The worker's inbox: unprocessed texts, oldest first (sms.worker.process_inbound);
            # and the webhook's "is an earlier text from this sender still waiting?".
            models.Index(
                fields=["next_attempt_at", "id"],
                name="sms_inbound_pending",
                condition=Q(processed_at__isnull=True),
            ),
            models.Index(
                fields=["sender_hash"],
                name="sms_inbound_pending_sender",
                condition=Q(processed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"inbound {self.pk}"


class OutboundSms(models.Model):
    """One SMS of an advisor's answer (answers over 1,600 characters are several), in the
    outbox until Twilio has it, then following its delivery.

    Saved in the transaction that stores the answer (sms.outbox), sent by the worker. A worker
    claims a row with a lease (claimed_until); a worker that dies mid-send leaves the lease to
    run out, and the next attempt first asks Twilio whether the text went out after all
    (attempt_started_at without a sid marks that doubt), so nothing is lost and nothing sent
    twice."""

    class Status(models.TextChoices):
        PENDING = "pending", _("In the outbox")
        # Twilio's statuses of an outbound message, in the order they move.
        ACCEPTED = "accepted", _("Accepted by Twilio")
        SCHEDULED = "scheduled", _("Scheduled")
        QUEUED = "queued", _("Queued at Twilio")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        UNDELIVERED = "undelivered", _("Not delivered")
        FAILED = "failed", _("Failed")
        CANCELED = "canceled", _("Canceled")
        READ = "read", _("Read")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    thread = models.ForeignKey(SmsThread, models.CASCADE, related_name="outbound")
    message = models.ForeignKey(Message, models.CASCADE, related_name="+")
    part = models.PositiveSmallIntegerField(default=1)
    parts = models.PositiveSmallIntegerField(default=1)
    body = models.TextField()  # ciphertext of this part
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    twilio_sid = models.CharField(max_length=34, null=True, blank=True, unique=True)
    # Twilio's error code, or ours ("opted_out", "gave_up"), when the text failed.
    error_code = models.CharField(max_length=20, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    # Set when a send starts, cleared when its outcome is known: a row claimed with this set
    # and no sid was being sent when its worker died or timed out.
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "part"], name="sms_outbound_unique_part"),
        ]
        indexes = [
            # The worker's outbox: rows still to send (sms.worker.send_outbound).
            models.Index(
                fields=["next_attempt_at", "id"],
                name="sms_outbound_pending",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"outbound {self.pk} ({self.status})"

    @property
    def text(self) -> str:
        return crypto.decrypt(self.body)


class TwilioDeletion(models.Model):
    """A text to delete at Twilio (DELETE /Messages/{sid}), so its content does not stay with
    the provider. Twilio refuses (20009) until a message is final; the worker tries again."""

    message_sid = models.CharField(max_length=34, unique=True)
    due_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["due_at"], name="sms_deletion_due")]

    def __str__(self) -> str:
        return f"deletion {self.pk}"
