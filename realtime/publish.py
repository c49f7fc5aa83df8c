"""Publishing committed events from wherever they are committed: a socket's frame handler, a
thread the handler waits for, a view, the SMS worker's thread, another process.

Events committed while a socket handles a frame are held until the handler has finished, so
the frame's own answer (an ack after commit) goes out before the broadcast it caused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from asgiref.sync import async_to_sync

from realtime.hub import get_hub, publish

logger = logging.getLogger(__name__)

Events = list[dict[str, Any]]

# A list while a frame is handled. asgiref copies the context into the threads it runs
# synchronous code on, so events committed there land in the same list.
_held: ContextVar[Events | None] = ContextVar("realtime_held_events", default=None)
# The event loop whose sockets a thread of our own (the SMS worker's) publishes to.
_loop_of_thread: ContextVar[asyncio.AbstractEventLoop | None] = ContextVar(
    "realtime_loop_of_thread", default=None
)


def committed(events: Events) -> None:
    """Publish events whose change has committed (advice.events calls this)."""
    held = _held.get()
    if held is not None:
        held.extend(events)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _publish_from_thread(events)
        return
    get_hub().publish_nowait(events)


def _publish_from_thread(events: Events) -> None:
    loop = _loop_of_thread.get()
    if loop is None or not loop.is_running():
        # A thread asgiref runs for an event loop: on that loop; anywhere else (a command, the
        # worker process): on a loop of its own, which rings the other processes.
        async_to_sync(publish)(events)
        return
    future = asyncio.run_coroutine_threadsafe(publish(events), loop)
    try:
        future.result(timeout=10)
    except Exception as error:
        # Committed already: clients catch up from the database when they resume.
        logger.warning("could not publish %d events (%s)", len(events), type(error).__name__)


def publish_to(loop: asyncio.AbstractEventLoop) -> None:
    """This thread publishes to `loop`'s sockets (call at the start of the thread)."""
    _loop_of_thread.set(loop)


@contextmanager
def holding() -> Iterator[Events]:
    """Hold events committed inside the block; the caller publishes them after it."""
    held: Events = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)
