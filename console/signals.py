from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db.models.signals import post_save
from django.dispatch import receiver

from console.auth import end_sessions_of, session_fingerprint, start_session_clock
from realtime.hub import publish, publish_on_commit


def sessions_changed(user_id: int, ended_session_key: str | None = None) -> dict:
    """The event that closes the advisor's sockets on the session that ended (named by a
    fingerprint, not its key) and makes the others check that their session is still valid
    (within a second: SAFETY.md C-4)."""
    return {
        "kind": "logout",
        "advisor": user_id,
        "session": session_fingerprint(ended_session_key),
    }


@receiver(user_logged_in)
def start_advisor_session_clock(sender, request, user, **kwargs):
    """Both session clocks (idle and absolute, console.auth) start at the password step."""
    if request is not None and hasattr(request, "session"):
        start_session_clock(request.session)


@receiver(user_logged_out)
def close_sockets_on_logout(sender, request, user, **kwargs):
    """The advisor's sockets on the session that just ended close at once. Sockets on the
    advisor's other sessions (another browser) check theirs, find it valid, and stay."""
    if user is not None:
        # Sent before Django deletes the session, so the event names it.
        session_key = request.session.session_key if request is not None else None
        async_to_sync(publish)([sessions_changed(user.pk, session_key)])


@receiver(post_save, sender=get_user_model())
def end_sessions_of_deactivated_user(sender, instance, created, **kwargs):
    """Deactivating an account ends its sessions (ASVS 7.4.2): they are deleted, and its open
    sockets close once the change is committed."""
    if not created and not instance.is_active:
        end_sessions_of(instance)
        publish_on_commit([sessions_changed(instance.pk)])
