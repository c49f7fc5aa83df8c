"""Serve the service with Daphne, the way production does: no access log (it would print
visitors' IP addresses), bounded WebSocket frames, keepalive pings.

`manage.py serve --port 8000` on one machine; deploy/ runs the same command under systemd, once
per process, behind nginx."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from realtime.sockets import MAX_FRAME_BYTES

DAPHNE_MAX_MESSAGE_BYTES = 4 * MAX_FRAME_BYTES


def daphne_args(*, host: str, port: int | None = None, fd: int | None = None) -> list[str]:
    endpoint = ["--fd", str(fd)] if fd is not None else ["-b", host, "-p", str(port)]
    return [
        *endpoint,
        # Verbosity 0: no access log, so no client addresses anywhere (D-2, C-7).
        "-v",
        "0",
        # The sockets refuse a frame over MAX_FRAME_BYTES with a typed error and stay open;
        # Daphne closes the connection only on one far beyond it.
        "--websocket-max-message-size",
        str(DAPHNE_MAX_MESSAGE_BYTES),
        "--websocket-max-frame-size",
        str(DAPHNE_MAX_MESSAGE_BYTES),
        # Keepalive pings from the server find dead connections the client never closed.
        "--ping-interval",
        "20",
        "--ping-timeout",
        "30",
        "--application-close-timeout",
        "5",
        "--no-server-name",
        "asgi:application",
    ]


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets with Daphne (no access log)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--fd", type=int, default=None, help="serve on an inherited socket")
        parser.add_argument(
            "--with-worker",
            action="store_true",
            help="run the background worker (SMS) inside this process; always so with the "
            "in-memory channel layer, where a separate worker could not reach the sockets",
        )

    def handle(self, *args, host, port, fd, with_worker, **options):
        args = daphne_args(host=host, port=port, fd=fd)
        if settings.SMS_ENABLED and (with_worker or not settings.REDIS_URL):
            from sms.worker import IN_PROCESS_ENV

            os.environ[IN_PROCESS_ENV] = "1"  # read by sms.apps in the Daphne process
        where = f"fd {fd}" if fd is not None else f"http://{host}:{port}/"
        self.stdout.write(f"Serving on {where} (the advisor console is at /advisor/)")
        self.stdout.flush()
        # Replace this process with Daphne, so signals from systemd reach the server itself.
        os.execv(sys.executable, [sys.executable, "-m", "daphne", *args])  # noqa: S606
