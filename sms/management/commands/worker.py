"""The background worker (sms.worker): inbound texts into conversations, the SMS outbox, and
deletions at Twilio. Run one or more in production, beside the web processes; SIGTERM stops it
after the step in hand, and a worker killed outright loses nothing (leases run out and the work
is picked up again)."""

import asyncio
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from sms.outbox import wake_worker
from sms.worker import LoopPublisher, Worker


class Command(BaseCommand):
    help = "Run the background worker (SMS outbox, inbound texts, deletions at Twilio)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run until idle, then exit")
        parser.add_argument("--poll", type=float, default=None, help="seconds between polls")
        parser.add_argument(
            "--lease",
            type=int,
            default=None,
            help="seconds a claimed text stays claimed (default 60)",
        )

    def handle(self, *args, once, poll, lease, **options):
        if not settings.SMS_ENABLED:
            self.stdout.write("The SMS channel is off (no TWILIO_ settings); nothing to do.")
            return
        # Events are published on a loop of our own that keeps running, so the channel
        # layer keeps one connection to Redis.
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=loop.run_forever, name="publish", daemon=True)
        loop_thread.start()
        worker = Worker(publish=LoopPublisher(loop), poll_seconds=poll, lease_seconds=lease)
        if once:
            handled = worker.run_until_idle()
            self.stdout.write(f"Handled {handled} items.")
            return
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()
            wake_worker()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write("Worker running (SIGTERM to stop).")
        self.stdout.flush()
        worker.run_forever(stop)
        loop.call_soon_threadsafe(loop.stop)
