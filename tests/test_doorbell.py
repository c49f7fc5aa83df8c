"""The doorbell between processes (realtime.hub): every hub delivers here at once and rings the
others through the channel layer, on one group that every hub joins.

A hub's sockets are let in only once its hub hears the rings published from then on; a hub
hears every other hub's rings, never its own twice; a process without sockets (the SMS worker)
rings too; a ring that cannot go out costs nothing here; a Redis restart is survived. Real
Redis, under a prefix of each test's own. Several hubs share one event loop here, as they would
share Redis as processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import time

import pytest
from channels.layers import get_channel_layer

from realtime import hub as realtime
from realtime.hub import GROUP, Hub
from tests.live import free_port

REDIS_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


@pytest.fixture(autouse=True)
def own_prefix(settings):
    """Hubs of other tests (and of servers they started) stay out of this test's group."""
    if "Redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
        pytest.skip("the doorbell between processes is Redis (REDIS_URL)")
    prefix = f"doorbell-{secrets.token_hex(4)}"
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


async def stop(*hubs: Hub) -> None:
    """The hubs' process ends (its event loop cancels the hubs' tasks)."""
    for hub in hubs:
        hub._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hub._reader


async def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_a_hub_delivers_here_once_and_rings_the_other_processes():
    here, there = Hub(), Hub()
    await here.start()
    await there.start()
    mine, theirs = Recorder(), Recorder()
    here.subscribe(7, mine)
    there.subscribe(7, theirs)
    layer, channel = await overhear()

    await here.publish([entry(7, 1)])

    # Here at once, without a trip through Redis; there through the one ring.
    assert mine.events == [entry(7, 1)]
    await asyncio.wait_for(theirs.arrived.wait(), 5)
    assert [m["events"] for m in await rings_heard(layer, channel)] == [[entry(7, 1)]]
    # The ring came back to its own hub too, which let it pass.
    assert mine.events == [entry(7, 1)] and theirs.events == [entry(7, 1)]
    await stop(here, there)


async def test_a_new_hub_hears_every_ring_published_once_it_has_started():
    first = Hub()
    await first.start()
    second = Hub()
    await second.start()
    listener = Recorder()
    second.subscribe(7, listener)

    # At once: a socket of the second process reads the database right after start().
    await first.publish([entry(7, 1)])

    await asyncio.wait_for(listener.arrived.wait(), 5)
    assert listener.events == [entry(7, 1)]
    await stop(first, second)


async def test_a_hub_whose_first_ring_redis_took_before_its_subscription_rings_again(
    monkeypatch,
):
    """The layer sends SUBSCRIBE without waiting for Redis to take it: a ring Redis takes
    first passes the new hub by, so start() returns only once one has come back."""
    layer = get_channel_layer()
    send = layer.group_send
    lost = []

    async def first_one_lost(group, message):
        if not lost:
            lost.append(message)
            return
        await send(group, message)

    monkeypatch.setattr(layer, "group_send", first_one_lost)
    hub = Hub()

    began = time.monotonic()
    await hub.start()

    assert len(lost) == 1
    assert hub._heard_itself.is_set()
    assert time.monotonic() - began < realtime.SUBSCRIBE_TIMEOUT
    await stop(hub)


async def test_a_hub_that_never_hears_itself_lets_its_sockets_in_after_a_while(monkeypatch):
    layer = get_channel_layer()

    async def all_lost(group, message):
        pass

    monkeypatch.setattr(layer, "group_send", all_lost)
    monkeypatch.setattr(realtime, "SUBSCRIBE_TIMEOUT", 0.3)
    hub = Hub()

    began = time.monotonic()
    await hub.start()

    assert 0.3 <= time.monotonic() - began < 1
    assert not hub._heard_itself.is_set()
    await stop(hub)


async def test_hubs_that_start_together_all_hear_each_other():
    hubs = [Hub() for _ in range(5)]
    await asyncio.gather(*(hub.start() for hub in hubs))

    listeners = [Recorder() for _ in hubs]
    for hub, listener in zip(hubs, listeners, strict=True):
        hub.subscribe(3, listener)
    await hubs[0].publish([entry(3, 1)])
    for listener in listeners:
        await asyncio.wait_for(listener.arrived.wait(), 5)
    await asyncio.sleep(0.2)
    assert [listener.events for listener in listeners] == [[entry(3, 1)]] * 5
    await stop(*hubs)


async def test_a_process_without_sockets_rings():
    hub = Hub()
    await hub.start()
    worker = Hub()  # the SMS worker's, say: never started, as no socket connects to it
    listener = Recorder()
    hub.subscribe(5, listener)

    await worker.publish([entry(5, 1)])

    await asyncio.wait_for(listener.arrived.wait(), 5)
    assert listener.events == [entry(5, 1)]
    await stop(hub)


async def test_a_ring_that_cannot_go_out_costs_nothing_here(monkeypatch):
    hub = Hub()
    await hub.start()
    listener = Recorder()
    hub.subscribe(4, listener)

    async def unreachable(group, message):
        raise ConnectionError("no Redis")

    monkeypatch.setattr(get_channel_layer(), "group_send", unreachable)
    await hub.publish([entry(4, 1)])

    # The event is committed; the other processes' clients catch up when they resume.
    assert listener.events == [entry(4, 1)]
    await stop(hub)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_the_doorbell_rings_again_once_redis_is_back(settings):
    """Redis restarted (it keeps nothing): the hubs' subscriptions are made again, with no
    state of the hub's own to restore. Its own Redis, which this test stops."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": REDIS_LAYER,
            "CONFIG": {"hosts": [{"address": url}], "prefix": settings.CHANNEL_PREFIX},
        }
    }

    def redis_server() -> subprocess.Popen:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
            != b"PONG\n"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return server

    server = await asyncio.to_thread(redis_server)
    try:
        here, there = Hub(), Hub()
        await here.start()
        await there.start()
        listener = Recorder()
        there.subscribe(8, listener)
        await here.publish([entry(8, 1)])
        await eventually(lambda: listener.events == [entry(8, 1)])

        server.terminate()
        server.wait()
        await here.publish([entry(8, 2)])  # lost: its clients resume from seq 1
        server = await asyncio.to_thread(redis_server)

        seq = 2
        while len(listener.events) < 2:
            seq += 1
            assert seq < 200, "the doorbell did not ring again within 20 s"
            await here.publish([entry(8, seq)])
            await asyncio.sleep(0.1)
        assert listener.events[1]["seq"] > 2
        await stop(here, there)
    finally:
        server.terminate()
        server.wait()
