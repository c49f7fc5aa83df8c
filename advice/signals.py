from asgiref.sync import async_to_sync
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from advice.realtime import publish


@receiver(user_logged_out)
def close_sockets_on_logout(sender, request, user, **kwargs):
    """An advisor who logs out is logged out everywhere at once: their open sockets close."""
    if user is not None:
        async_to_sync(publish)([{"kind": "logout", "advisor": user.pk}])
