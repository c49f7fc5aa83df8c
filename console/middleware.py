from functools import cache
from urllib.parse import urlencode

from django.contrib import auth
from django.contrib.auth import SESSION_KEY
from django.shortcuts import redirect
from django.urls import reverse

from console.auth import mark_active, session_ended_because, start_missing_session_clock


@cache
def advisor_path_prefixes() -> tuple[str, ...]:
    """The advisor surfaces (the console's pages and the admin), from the URLconf, so a moved
    mount point cannot slip out from under the session rules."""
    return (reverse("advisor-console"), reverse("admin:index"))


class AdvisorSessionMiddleware:
    """On the advisor's pages (the console and the admin): ends an advisor session when it has
    run out (idle for ADVISOR_IDLE_MINUTES, or older than ADVISOR_SESSION_HOURS; see
    console.auth) or when its user may no longer log in (deactivated, deleted, password
    changed: ASVS 7.4.2). Ending it is a real logout: the session is deleted and the advisor's
    sockets close. Otherwise the request counts as activity. Also sets the advisor side's
    Referrer-Policy.

    Synchronous on purpose: it reads and writes the session, which is synchronous anyway.
    Placed after AuthenticationMiddleware and OTPMiddleware (it needs request.user)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(advisor_path_prefixes()):
            return self.get_response(request)
        if SESSION_KEY in request.session:
            reason = self._end_reason(request)
            if reason is not None:
                auth.logout(request)
                response = redirect(f"{reverse('advisor-login')}?{urlencode({'ended': reason})}")
                return self._advisor_headers(response)
            start_missing_session_clock(request.session)
            mark_active(request.session)
        return self._advisor_headers(self.get_response(request))

    @staticmethod
    def _advisor_headers(response):
        # The visitor side sends no referrer at all. With "no-referrer" a browser sends
        # `Origin: null` on a form POST, which Django's CSRF check rightly refuses; the advisor
        # side (its login forms, the admin) needs at least "same-origin" (SAFETY.md H-2).
        # SecurityMiddleware only sets the header where none is set yet.
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    @staticmethod
    def _end_reason(request) -> str | None:
        if not request.user.is_authenticated:
            # The session names a user Django no longer accepts: it is of no use; clear it.
            return "revoked"
        return session_ended_because(request.session)
