from django.conf.urls.i18n import i18n_patterns
from django.contrib import admin
from django.urls import include, path
from django_otp.admin import OTPAdminSite

from config.health import health
from console import views

# The admin needs an OTP-verified session like every advisor page (O-7).
admin.site.__class__ = OTPAdminSite
admin.site.site_header = "Advice line"
admin.site.login_template = None

urlpatterns = [
    path("advisor/", include("console.urls")),
    # The admin logs in through the advisor's pages (password, then TOTP), not its own form.
    path("admin/login/", views.admin_login),
    path("admin/", admin.site.urls),
    path("sms/", include("sms.urls")),
    path("interpreter/", include("interpreter.urls")),
    path("health/", health, name="health"),
    path("", include("chat.urls_neutral")),
]

# The visitor's pages, in the visitor's language: /, /en/, /ar/ ... (the default, Swedish,
# has no prefix). The language lives in the URL, not in a cookie on the device.
urlpatterns += i18n_patterns(
    path("", include("chat.urls")),
    prefix_default_language=False,
)
