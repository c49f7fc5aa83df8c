"""The domain publishes its own events, once the change they report has committed (as Zulip's
`send_event_on_commit`), so no caller can forget to or publish too early.

An event is a dict with a "kind" ("message", "conversation", "queue", "interpreter",
"delivery"). The domain does not know who listens: the wiring (config.apps) connects the
realtime kernel's publisher at startup; tests connect their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

Event = dict[str, Any]
Publisher = Callable[[list[Event]], None]

_publishers: list[Publisher] = []


def connect(publisher: Publisher) -> None:
    if publisher not in _publishers:
        _publishers.append(publisher)


def disconnect(publisher: Publisher) -> None:
    if publisher in _publishers:
        _publishers.remove(publisher)


def on_commit(events: list[Event]) -> list[Event]:
    """Publish `events` when the current transaction commits (at once outside one); returns
    them, for the caller's own use (a socket that follows what it has just taken)."""
    if events:
        transaction.on_commit(lambda: committed(events))
    return events


def committed(events: list[Event]) -> None:
    """Publish events whose change has committed already (the asynchronous statements of
    advice.store commit before they return)."""
    if events:
        for publisher in list(_publishers):
            publisher(events)


def queue_changed() -> Event:
    return {"kind": "queue"}


def committed_and(events: list[Event]) -> list[Event]:
    """`committed`, returning the events."""
    committed(events)
    return events
