"""The advisor's pages: password, then TOTP (enrolling a device on the first login), then the
console. Every page but the login steps needs an OTP-verified session; the session's idle and
absolute limits are kept by console.middleware.AdvisorSessionMiddleware."""

from __future__ import annotations

import time
from base64 import b32encode
from functools import wraps
from typing import Any
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import get_language_info, gettext_lazy, ngettext_lazy
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_otp import devices_for_user, user_has_device
from django_otp import login as otp_login
from django_otp.forms import OTPAuthenticationFormMixin, OTPTokenForm
from django_otp.plugins.otp_totp.models import TOTPDevice

from advice.choices import (
    COUNTIES,
    INTERPRETER_LANGUAGES,
    Channel,
    InterpreterGender,
    Outcome,
    SafeNow,
    Writer,
)
from advice.models import AdvisorProfile, Conversation, InterpreterInvitation, Message
from console.auth import idle_limit_seconds, lifetime_seconds

# Where to go once the login is complete (e.g. /admin/ when the admin sent the advisor here).
NEXT_SESSION_KEY = "advisor_next"


def otp_required(view):
    """Like django-otp's decorator, but sends each advisor to the step they are missing."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect("advisor-login")
        if not user.is_verified():
            return redirect(_second_step(user))
        return view(request, *args, **kwargs)

    return wrapper


def _second_step(user: Any) -> str:
    return "advisor-verify" if user_has_device(user) else "advisor-enrol"


def _after_login(request: HttpRequest) -> HttpResponse:
    return redirect(request.session.pop(NEXT_SESSION_KEY, None) or reverse("advisor-console"))


def _safe_next(request: HttpRequest) -> str | None:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return None


ENDED_NOTICES = {
    "idle": ngettext_lazy(
        "You were logged out after %(minutes)d minute without activity.",
        "You were logged out after %(minutes)d minutes without activity.",
        "minutes",
    ),
    "lifetime": ngettext_lazy(
        "You were logged out: a session lasts at most %(hours)d hour.",
        "You were logged out: a session lasts at most %(hours)d hours.",
        "hours",
    ),
    "revoked": gettext_lazy("Your session has ended. Log in again."),
}


@require_http_methods(["GET", "HEAD", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    """Step one: the password. Django rotates the session key here (session fixation, O-8)."""
    user = request.user
    if user.is_authenticated:
        return redirect("advisor-console" if user.is_verified() else _second_step(user))
    form = AuthenticationForm(request, data=request.POST or None)
    next_url = _safe_next(request)
    if request.method == "POST" and form.is_valid():
        auth.login(request, form.get_user())
        if next_url:
            request.session[NEXT_SESSION_KEY] = next_url
        return redirect(_second_step(request.user))
    ended = request.GET.get("ended", "")
    notice = ""
    if ended in ENDED_NOTICES:
        notice = ENDED_NOTICES[ended] % {
            "minutes": idle_limit_seconds() // 60,
            "hours": lifetime_seconds() // 3600,
        }
    return render(
        request,
        "advisor/login.html",
        {
            "form": form,
            "next": next_url or "",
            "notice": notice,
        },
    )


class AdvisorTokenForm(OTPTokenForm):
    """django-otp's token form, in our words (and so in Swedish too)."""

    otp_error_messages = dict(
        OTPAuthenticationFormMixin.otp_error_messages,
        token_required=gettext_lazy("Enter the six-digit code from your authenticator app."),
        invalid_token=gettext_lazy(
            "That code is not right. Wait for a new code in the app and try again."
        ),
        n_failed_attempts=ngettext_lazy(
            "Too many wrong codes (%(failure_count)d). Wait a few seconds and try again.",
            "Too many wrong codes (%(failure_count)d). Wait a few seconds and try again.",
            "failure_count",
        ),
        verification_not_allowed=gettext_lazy("Codes cannot be checked right now. Try again soon."),
        device_required=gettext_lazy("Choose your authenticator."),
    )


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Step two: a TOTP code from the advisor's confirmed device. django-otp refuses a code
    that was used before (last_t, O-4) and throttles wrong ones (1, 2, 4, ... seconds, O-5).
    The session key changes once the code is right (O-8)."""
    if request.user.is_verified():
        return redirect("advisor-console")
    if not user_has_device(request.user):
        return redirect("advisor-enrol")
    data = None
    if request.method == "POST":
        data = request.POST.copy()
        devices = list(devices_for_user(request.user))
        if not data.get("otp_device") and len(devices) == 1:
            data["otp_device"] = devices[0].persistent_id  # the usual case: one phone
    form = AdvisorTokenForm(request.user, request, data=data)
    if data is not None and form.is_valid():
        otp_login(request, request.user.otp_device)
        request.session.cycle_key()
        return _after_login(request)
    return render(
        request,
        "advisor/verify.html",
        {
            "form": form,
            "choose_device": len(form.fields["otp_device"].choices) > 2,
        },
    )


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """First login: a new TOTP device, shown as a QR code drawn here (no outside service). It
    stays unconfirmed, and useless for logging in, until a correct code is entered (O-3)."""
    if request.user.is_verified():
        return redirect("advisor-console")
    if user_has_device(request.user):
        return redirect("advisor-verify")
    device = TOTPDevice.objects.filter(user=request.user, confirmed=False).order_by(
        "id"
    ).first() or TOTPDevice.objects.create(user=request.user, name="Authenticator", confirmed=False)
    error = ""
    if request.method == "POST":
        token = request.POST.get("otp_token", "").strip().replace(" ", "")
        with transaction.atomic():
            device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
            allowed, _details = device.verify_is_allowed()
            if not allowed:
                error = _("Too many wrong codes. Wait a few seconds and try again.")
            elif token.isdigit() and device.verify_token(token):
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                otp_login(request, device)
                request.session.cycle_key()
                return _after_login(request)
            else:
                error = _("That code is not right. Wait for a new code in the app and try again.")
    secret = b32encode(device.bin_key).decode().rstrip("=")
    qr_svg = segno.make(device.config_url, error="m").svg_inline(
        scale=5,
        border=4,
        dark="#000",
        light="#fff",
        title=_("QR code for your authenticator app"),
    )
    return render(
        request,
        "advisor/enrol.html",
        {
            "qr_svg": qr_svg,
            # In groups of four, as authenticator apps show and accept it.
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "error": error,
        },
    )


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    auth.logout(request)  # the user_logged_out signal closes this session's open sockets
    return redirect("advisor-login")


@require_safe
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login page is ours: password, then TOTP, then back to the admin (O-7)."""
    next_url = _safe_next(request) or reverse("admin:index")
    return redirect(f"{reverse('advisor-login')}?{urlencode({'next': next_url})}")


@otp_required
def console(request: HttpRequest) -> HttpResponse:
    profile = AdvisorProfile.for_user(request.user)
    return render(
        request,
        "advisor/console.html",
        {
            "profile": profile,
            "outcomes": Outcome.choices,
            "interpreter_languages": INTERPRETER_LANGUAGES,
            "console_config": console_config(request, profile),
        },
    )


def console_config(request: HttpRequest, profile: AdvisorProfile) -> dict[str, Any]:
    """Everything console.js needs, passed as JSON in the page (json_script): no inline script,
    and every word it shows translated here."""
    return {
        "socket_path": "/ws/advisor/",
        "login_url": reverse("advisor-login"),
        "console_url": reverse("advisor-console"),
        "advisor_id": request.user.pk,
        "capacity": profile.capacity,
        "max_length": settings.MAX_MESSAGE_LENGTH,
        "max_note_length": settings.MAX_NOTE_LENGTH,
        # Lets the page correct for a clock that is off when it counts waiting time.
        "server_now_ms": int(time.time() * 1000),
        "labels": {
            "channel": dict(Channel.choices),
            "writer": dict(Writer.choices),
            "language": language_names(),
            "county": dict(COUNTIES),
            "interpreter_language": dict(INTERPRETER_LANGUAGES),
            "interpreter_gender": dict(InterpreterGender.choices),
            "outcome": dict(Outcome.choices),
            "end_reason": dict(Conversation.EndReason.choices),
            "safe_now": dict(SafeNow.choices),
            "event": dict(Message.Event.choices),
            "invitation_status": dict(InterpreterInvitation.Status.choices),
        },
        "strings": console_strings(),
    }


def language_names() -> dict[str, str]:
    """A conversation's language as the advisor reads it: in the advisor's language where
    Django knows it, else in the language's own name."""
    names = {code: name for code, name in INTERPRETER_LANGUAGES}
    for code, own_name in settings.LANGUAGES:
        try:
            names[code] = str(get_language_info(code).get("name_translated", own_name))
        except KeyError:
            names[code] = own_name
    return names


def console_strings() -> dict[str, str]:
    """The console's words. Placeholders in braces are filled in by console.js."""
    return {
        "connecting": _("Connecting…"),
        "connected": _("Connected"),
        "reconnecting": _("Connection lost. Reconnecting…"),
        "session_ended": _("Your session has ended. Log in again."),
        "queue_none": _("Nobody is waiting."),
        "queue_one": _("1 waiting"),
        "queue_many": _("{n} waiting"),
        "queue_more": _("{n} waiting. The first {shown} are listed."),
        "capacity": _("{n} of {capacity} conversations"),
        "capacity_full": _("You have as many conversations as you can take."),
        "take": _("Take"),
        "mark_urgent": _("Mark urgent"),
        "unmark_urgent": _("Not urgent"),
        "urgent": _("Urgent"),
        "not_urgent": _("Normal"),
        "interpreter_yes": _("Interpreter: {language}"),
        "interpreter_no": _("No interpreter"),
        "interpreter_outside_community": _("from outside the visitor's community"),
        "interpreter_gender": _("prefers {gender}"),
        "returning": _("Has been here before (return code)"),
        "not_given": _("Not given"),
        "no": _("No"),
        "waited_seconds": _("{s} s"),
        "waited_minutes": _("{m} min {s} s"),
        "waited_hours": _("{h} h {m} min"),
        "from_visitor": _("Visitor"),
        "from_you": _("You"),
        "from_advisor": _("Advisor"),
        "from_interpreter": _("Interpreter"),
        "typing": _("The visitor is typing…"),
        "sending": _("Sending…"),
        "sent": _("Sent"),
        "not_sent": _("Not sent: {reason}"),
        "delivery_queued": _("Waiting to be sent"),
        "delivery_sent": _("Sent to the phone network"),
        "delivery_delivered": _("Delivered"),
        "delivery_failed": _("Not delivered"),
        "delivery_error": _("Not delivered: {error}"),
        "attachments_one": _("The sender attached 1 item (not shown)."),
        "attachments_many": _("The sender attached {n} items (not shown)."),
        "joined_you": _("You took the conversation."),
        "joined_other": _("An advisor joined."),
        "closed_event": _("The conversation was closed."),
        "ended": _("Ended: {reason}"),
        "outcome": _("Outcome: {outcome}"),
        "unread": _("{n} new"),
        "new_message": _("New message from the visitor: {text}"),
        "taken_notice": _("You took a conversation: {label}"),
        "conversation_label": _("{channel}, {language}, taken {time} (#{ref})"),
        "choose_outcome": _("Choose an outcome before you close the conversation."),
        "choose_interpreter_language": _("Choose the interpreter's language."),
        "interpreter_saved": _("The interpreter setting is saved."),
        "empty_message": _("The message is empty."),
        "message_too_long": _("The message is longer than {max} characters."),
        "characters_left": _("{n} characters left"),
        "error_capacity_reached": _(
            "You already have as many conversations as you can take. Close one first."
        ),
        "error_already_taken": _("Another advisor took that conversation first."),
        "error_queue_empty": _("Nobody is waiting right now."),
        "error_not_your_conversation": _("That conversation is not open for you."),
        "error_conversation_ended": _("That conversation has ended."),
        "error_rate_limited": _("Too much at once. Wait a moment and try again."),
        "error_not_found": _("That conversation no longer exists."),
        "error_invalid_language": _("Choose the interpreter's language from the list."),
        "error_invalid_outcome": _("Choose an outcome from the list."),
        "error_empty_message": _("The message is empty."),
        "error_message_too_long": _("The message is too long."),
        "error_other": _("Something went wrong ({code}): {message}"),
        "error_interpreter_web_only": _("An interpreter can join web chats only."),
        "error_no_interpreter": _("No interpreter is invited to this conversation."),
        "error_note_too_long": _("The notes are too long."),
        "error_session_ended": _("Your session has ended. Log in again."),
        "no_invitation": _("No interpreter is invited."),
        "invitation_expires": _("The link works until {time}."),
        "link_copied": _("The link is copied. Send it only to the interpreter."),
        "history_shared": _("The interpreter can now read the earlier messages."),
        "notes_saved": _("Saved {time}"),
        "notes_unsaved": _("Not saved yet"),
        "earlier_heading": _("Earlier conversation, ended {time}"),
        "earlier_none": _("No earlier conversation could be found."),
        "earlier_note": _("Notes: {text}"),
        "dismiss": _("Dismiss"),
    }
