"""Rings to the other processes only when there are any (realtime.hub, `Presence`).

A hub alone rings nobody; a new hub lets its sockets in only once the hubs already there know
of it, and from then on they ring it; a hub left alone stops ringing; a process without sockets
(the SMS worker) always rings. Real Redis: the registry and the doorbell are the ones the
service uses, under a prefix of each test's own. Several hubs share one event loop here, as
they would share Redis as processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import hub as realtime
from realtime.hub import GROUP, Hub, Presence

pytestmark = pytest.mark.skipif(
    "Redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"],
    reason="the registry of hubs lives in Redis (REDIS_URL)",
)


@pytest.fixture(autouse=True)
def own_prefix(settings):
    """Hubs of other tests (and of servers they started) stay out of this test's registry."""
    prefix = f"presence-{secrets.token_hex(4)}"
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_PREFIX = prefix
    settings.CHANNEL_LAYERS = {
        "default": {**layer, "CONFIG": {**layer["CONFIG"], "prefix": prefix}}
    }
    return prefix


class Recorder:
    """A socket as the hub sees it: it only keeps what it is handed."""

    advisor_id = None

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.arrived = asyncio.Event()

    async def on_event(self, event: dict) -> None:
        self.events.append(event)
        self.arrived.set()

    async def on_queue(self, snapshot) -> None:
        pass


def entry(conversation: int, seq: int) -> dict:
    return {"kind": "message", "conversation": conversation, "seq": seq, "text": "hej"}


async def overhear() -> tuple:
    """A bare member of the doorbell group: it hears every ring, and is no hub."""
    layer = get_channel_layer()
    channel = await layer.new_channel("overhear.")
    await layer.group_add(GROUP, channel)
    return layer, channel


async def rings_heard(layer, channel, within: float = 0.3) -> list[dict]:
    heard = []
    with contextlib.suppress(TimeoutError):
        while True:
            heard.append(await asyncio.wait_for(layer.receive(channel), within))
    return [m for m in heard if m.get("events")]


async def leave(hub: Hub) -> None:
    """The hub's process ends cleanly (its event loop cancels the hub's tasks)."""
    for task in (hub._presence, hub._reader):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_a_hub_alone_delivers_here_and_rings_nobody():
    layer, channel = await overhear()
    hub = Hub()
    await hub.start()
    assert hub.alone
    listener = Recorder()
    hub.subscribe(7, listener)

    await hub.publish([entry(7, 1)])

    assert listener.events == [entry(7, 1)]
    assert await rings_heard(layer, channel) == []
    await leave(hub)


async def test_a_new_hub_is_let_in_once_the_others_know_of_it_and_is_rung_from_then_on():
    first = Hub()
    await first.start()
    assert first.alone

    began = time.monotonic()
    second = Hub()
    await second.start()

    # The first heard the hello, switched ringing on, and only then answered; the second
    # waited for that answer (not for its time limit).
    assert not first.alone and not second.alone
    assert time.monotonic() - began < realtime.WELCOME_TIMEOUT
    listener = Recorder()
    second.subscribe(7, listener)
    await first.publish([entry(7, 1)])
    await asyncio.wait_for(listener.arrived.wait(), 5)
    assert listener.events == [entry(7, 1)]
    await leave(first)
    await leave(second)


async def test_hubs_that_start_together_all_ring_each_other():
    hubs = [Hub() for _ in range(5)]
    await asyncio.gather(*(hub.start() for hub in hubs))

    assert [hub.alone for hub in hubs] == [False] * 5
    listeners = [Recorder() for _ in hubs]
    for hub, listener in zip(hubs, listeners, strict=True):
        hub.subscribe(3, listener)
    await hubs[0].publish([entry(3, 1)])
    for listener in listeners:
        await asyncio.wait_for(listener.arrived.wait(), 5)
    for hub in hubs:
        await leave(hub)


async def test_a_hub_left_alone_stops_ringing(monkeypatch):
    monkeypatch.setattr(realtime, "PRESENCE_INTERVAL", 0.05)
    monkeypatch.setattr(realtime, "PRESENCE_TTL", 0.5)
    first, second = Hub(), Hub()
    await first.start()
    await second.start()

    await leave(second)
    await asyncio.sleep(0.3)
    assert not first.alone  # heard from lately
    await eventually(lambda: first.alone)

    layer, channel = await overhear()
    await first.publish([entry(9, 1)])
    assert await rings_heard(layer, channel) == []
    await leave(first)


async def test_a_process_that_died_without_leaving_is_neither_waited_for_nor_rung():
    """Killed: its entry stays in the registry until it lapses, but its channel has lost its
    subscriber with its connection to Redis."""
    registry = Presence.for_settings()
    await registry.refresh("hub.of-a-process-that-was-killed")

    began = time.monotonic()
    hub = Hub()
    await hub.start()

    assert time.monotonic() - began < realtime.WELCOME_TIMEOUT
    assert hub.alone
    await registry.close()
    await leave(hub)


async def test_a_hub_heard_from_lately_counts_though_missing_from_the_registry(monkeypatch):
    """Its entry lapsed (its process stalled, or lost Redis for a while) but it rings: it has
    sockets, so it is rung for PRESENCE_TTL after it was last heard."""
    monkeypatch.setattr(realtime, "PRESENCE_INTERVAL", 0.05)
    monkeypatch.setattr(realtime, "PRESENCE_TTL", 1.0)
    hub = Hub()
    await hub.start()
    assert hub.alone

    await get_channel_layer().group_send(
        GROUP, {"type": "advice.event", "origin": "stalled", "listens": True, "events": []}
    )
    await eventually(lambda: not hub.alone)
    await asyncio.sleep(0.5)  # ten refreshes of the registry, which does not list it
    assert not hub.alone
    await eventually(lambda: hub.alone)
    await leave(hub)


async def test_after_the_registry_is_lost_a_hub_rings_until_the_others_could_enter_again(
    monkeypatch,
):
    """Redis restarted (it keeps nothing): the hub that enters again first must not take the
    empty registry for being alone."""
    monkeypatch.setattr(realtime, "PRESENCE_INTERVAL", 0.05)
    monkeypatch.setattr(realtime, "PRESENCE_TTL", 1.0)
    hub = Hub()
    await hub.start()
    assert hub.alone
    registry = Presence.for_settings()

    await registry.redis.delete(registry.key)

    await eventually(lambda: not hub.alone)
    await asyncio.sleep(0.5)
    assert not hub.alone
    await eventually(lambda: hub.alone)
    await registry.close()
    await leave(hub)


async def test_a_process_without_sockets_always_rings():
    layer, channel = await overhear()
    hub = Hub()
    await hub.start()
    assert hub.alone
    worker = Hub()  # the SMS worker's, say: never started, as no socket connects to it
    listener = Recorder()
    hub.subscribe(5, listener)

    await worker.publish([entry(5, 1)])

    await asyncio.wait_for(listener.arrived.wait(), 5)
    assert [m["events"] for m in await rings_heard(layer, channel)] == [[entry(5, 1)]]
    # Nor does the worker's ring count as another hub to ring.
    assert hub.alone
    await leave(hub)


async def test_a_hub_that_cannot_reach_the_registry_rings(monkeypatch):
    async def unreachable(self, origin):
        raise ConnectionError("no Redis")

    monkeypatch.setattr(Presence, "refresh", unreachable)
    layer, channel = await overhear()
    hub = Hub()
    await hub.start()

    assert not hub.alone
    await hub.publish([entry(4, 1)])
    assert [m["events"] for m in await rings_heard(layer, channel)] == [[entry(4, 1)]]
    await leave(hub)
