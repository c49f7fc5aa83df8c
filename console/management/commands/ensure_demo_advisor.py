"""Create a demo advisor for a first look, if there is no advisor yet, and print how to log in:
the username, a fresh password, and the TOTP enrolment as an otpauth URI and a QR code in the
terminal. The device stays unconfirmed until the first correct code at /advisor/enrol/."""

import secrets

import segno
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django_otp.plugins.otp_totp.models import TOTPDevice

from advice.models import AdvisorProfile

USERNAME = "demo"


class Command(BaseCommand):
    help = "Create a demo advisor with a TOTP device if no advisor exists."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_active=True).exists():
            self.stdout.write("Advisors exist already; no demo advisor created.")
            return
        password = "-".join(secrets.token_hex(3) for _ in range(4))
        user = User.objects.create_user(USERNAME, password=password, is_staff=True)
        AdvisorProfile.objects.create(user=user, display_name="Demo", languages=["sv", "en"])
        device = TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=False)
        qr = segno.make(device.config_url, error="l")
        self.stdout.write("")
        self.stdout.write("A demo advisor was created. Log in at /advisor/ with")
        self.stdout.write(f"  username: {USERNAME}")
        self.stdout.write(f"  password: {password}")
        self.stdout.write("and enrol this TOTP in an authenticator app (scan, or enter the URI):")
        self.stdout.write(f"  {device.config_url}")
        qr.terminal(out=self.stdout._out, compact=True)
        self.stdout.write("The first login asks for a code from the app to confirm the device.")
        self.stdout.write("")
