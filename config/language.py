"""Which language a request is served in.

The visitor's pages take their language from the URL only (i18n_patterns: / is Swedish, /en/,
/ar/ ...): never from a cookie, which would be a trace on the device, and never from the
browser's Accept-Language, which a visitor on a borrowed or watched phone does not control.

The advisor side (the console and the admin) is Swedish or English only. Django's own
LocaleMiddleware would serve every non-prefixed page in LANGUAGE_CODE; here an advisor page
follows the browser's Accept-Language, but only among settings.ADVISOR_LANGUAGES, so an advisor
whose browser prefers Arabic still gets Swedish, never a half-translated Arabic console.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.middleware.locale import LocaleMiddleware
from django.urls import reverse
from django.utils import translation
from django.utils.translation.trans_real import parse_accept_lang_header


@cache
def advisor_path_prefixes() -> tuple[str, ...]:
    """The URL prefixes of the advisor surfaces, taken from the URLconf so a moved mount point
    cannot escape the rule."""
    return (reverse("advisor-console"), reverse("admin:index"))


def advisor_language(accept_language: str) -> str:
    """The first of the browser's preferred languages an advisor page speaks, else Swedish."""
    for code, _quality in parse_accept_lang_header(accept_language):
        base = code.lower().split("-")[0]
        if base in settings.ADVISOR_LANGUAGES:
            return base
    return settings.LANGUAGE_CODE


class LanguageMiddleware(LocaleMiddleware):
    def process_request(self, request):
        if not request.path_info.startswith(advisor_path_prefixes()):
            return super().process_request(request)
        language = advisor_language(request.META.get("HTTP_ACCEPT_LANGUAGE", ""))
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()
        return None
