"""The advisor's pages: password, then TOTP (enrolling a device on the first login), then the
console. Every page but the login steps needs an OTP-verified session."""

from __future__ import annotations

from functools import wraps

import segno
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.forms import OTPTokenForm
from django_otp.plugins.otp_totp.models import TOTPDevice

from advice.choices import COUNTIES, INTERPRETER_LANGUAGES, Outcome
from advice.models import AdvisorProfile


def otp_required(view):
    """Like django-otp's decorator, but sends each advisor to the step they are missing."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect("advisor-login")
        if not user.is_verified():
            return redirect("advisor-verify" if user_has_device(user) else "advisor-enrol")
        return view(request, *args, **kwargs)

    return wrapper


@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    """Step one: the password. Django rotates the session key here (session fixation)."""
    if request.user.is_authenticated and request.user.is_verified():
        return redirect("advisor-console")
    form = AuthenticationForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        auth.login(request, form.get_user())
        return redirect("advisor-verify")
    return render(request, "advisor/login.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Step two: a TOTP code from the advisor's confirmed device. django-otp refuses a code
    that was used before (last_t) and throttles wrong ones (1, 2, 4, ... seconds)."""
    if not user_has_device(request.user):
        return redirect("advisor-enrol")
    form = OTPTokenForm(request.user, request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        otp_login(request, request.user.otp_device)
        request.session.cycle_key()
        return redirect("advisor-console")
    return render(request, "advisor/verify.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """First login: a new TOTP device, shown as a QR code drawn here (no outside service). It
    stays unconfirmed, and useless for logging in, until a correct code is entered."""
    if user_has_device(request.user):
        return redirect("advisor-verify")
    device = (
        TOTPDevice.objects.filter(user=request.user, confirmed=False).order_by("id").first()
        or TOTPDevice.objects.create(user=request.user, name="Authenticator", confirmed=False)
    )
    error = ""
    if request.method == "POST":
        token = request.POST.get("otp_token", "").strip()
        with transaction.atomic():
            device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
            allowed, _details = device.verify_is_allowed()
            if allowed and token.isdigit() and device.verify_token(token):
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                otp_login(request, device)
                request.session.cycle_key()
                return redirect("advisor-console")
        error = _("That code is not right. Wait for a new code in the app and try again.")
    qr_svg = segno.make(device.config_url, error="m").svg_inline(scale=5, border=2)
    return render(
        request, "advisor/enrol.html",
        {"qr_svg": qr_svg, "secret": device.config_url.split("secret=")[1].split("&")[0],
         "error": error},
    )


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    auth.logout(request)  # the user_logged_out signal closes the advisor's open sockets
    return redirect("advisor-login")


@otp_required
def console(request: HttpRequest) -> HttpResponse:
    profile = AdvisorProfile.for_user(request.user)
    return render(request, "advisor/console.html", {
        "profile": profile,
        "outcomes": Outcome.choices,
        "interpreter_languages": INTERPRETER_LANGUAGES,
        "counties": COUNTIES,
        "languages": settings.LANGUAGES,
    })
