"""The benchmark's scenarios. Each returns the JSON lines it reports (a list of dicts)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.clients import (
    Advisor,
    Ledger,
    RelayPeer,
    Socket,
    Visitor,
    gather_limited,
    now,
)
from bench.stack import Server, Stack
from bench.stats import ms, percentile, summary

# Advisor sockets skip parsing the queue frames they are sent; the load generator has no use
# for them and parsing them would take its time.
QUEUE_PREFIX = '{"type":"queue"'


ERRORS_SEEN: dict[str, int] = {}


def note_errors(results: list) -> None:
    """Count failures by kind, for the report (the first of each kind goes to stderr)."""
    for result in results:
        if isinstance(result, BaseException):
            kind = type(result).__name__
            if kind not in ERRORS_SEEN:
                print(f"bench: first {kind}: {result!r}"[:300], file=sys.stderr)
            ERRORS_SEEN[kind] = ERRORS_SEEN.get(kind, 0) + 1


def origin_of(url: str) -> str:
    return "http://" + url.split("://", 1)[1]


# --- advisors made directly in the bench database ----------------------------------------------


def make_advisors(count: int, *, capacity: int = 1) -> list[str]:
    """`count` advisors with a confirmed TOTP device and an OTP-verified session each, made in
    the bench database the way tests/factories.py does; returns their session cookies."""
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from advice.models import AdvisorProfile
    from tests.factories import session_cookie

    User = get_user_model()
    stamp = f"{int(time.time() * 1000) % 10**9}"
    users = []
    for i in range(count):
        user = User(username=f"bench{stamp}n{i}", is_staff=True)
        user.set_unusable_password()
        users.append(user)
    users = User.objects.bulk_create(users)
    AdvisorProfile.objects.bulk_create(
        [AdvisorProfile(user=u, display_name=f"Advisor {i}", capacity=capacity,
                        languages=["sv", "en"]) for i, u in enumerate(users)]
    )
    devices = TOTPDevice.objects.bulk_create(
        [TOTPDevice(user=u, name="phone", confirmed=True) for u in users]
    )
    return [session_cookie(u, device=d).split(";")[0] for u, d in zip(users, devices, strict=True)]


async def advisors_for(count: int, *, capacity: int = 1) -> list[str]:
    from asgiref.sync import sync_to_async

    return await sync_to_async(make_advisors, thread_sensitive=True)(count, capacity=capacity)


# --- pairs: one visitor and one advisor in one conversation -------------------------------------


class Pair:
    def __init__(self, visitor: Visitor, advisor: Advisor, conversation: str) -> None:
        self.visitor = visitor
        self.advisor = advisor
        self.conversation = conversation

    async def say(self, message_id: int, at: float, *, from_visitor: bool) -> None:
        if from_visitor:
            await self.visitor.say(message_id, at)
        else:
            await self.advisor.say(self.conversation, message_id, at)


async def open_pairs(urls_for_visitors: list[str], urls_for_advisors: list[str], count: int,
                     ledger: Ledger, *, lanes: int = 10) -> tuple[list[Pair], int]:
    """`count` conversations through the protocol: advisors connect, then visitors start and
    advisors take the next one, a few lanes at a time so the queue stays short. Which advisor
    got whose conversation is learnt from a hello text each visitor sends.
    Returns the pairs and the number of failed connections."""
    cookies = await advisors_for(count)
    failures = 0

    advisors = []
    for i, cookie in enumerate(cookies):
        url = urls_for_advisors[i % len(urls_for_advisors)]
        advisor = Advisor([url], origin_of, ledger, cookie)
        advisor.skip_prefixes = (QUEUE_PREFIX,)
        advisors.append(advisor)

    async def open_advisor(advisor: Advisor) -> None:
        hello = None
        await advisor.open()
        hello = advisor.wait_for(lambda f: f["type"] == "hello")
        await hello

    visitors = [Visitor([urls_for_visitors[i % len(urls_for_visitors)]], origin_of, ledger)
                for i in range(count)]
    queue: asyncio.Queue[tuple[Visitor, Advisor]] = asyncio.Queue()
    for pair in zip(visitors, advisors, strict=True):
        queue.put_nowait(pair)

    async def lane() -> None:
        # Advisor, visitor, take: the queue (which every advisor is sent whole at each
        # change) stays a few conversations long.
        nonlocal failures
        while not queue.empty():
            visitor, advisor = queue.get_nowait()
            try:
                await open_advisor(advisor)
                await visitor.open()
                await visitor.start()
                taken = advisor.wait_for(
                    lambda f: f["type"] == "conversation"
                    and f["conversation"]["status"] == "active"
                )
                await advisor.send({"type": "take_next"})
                await taken
            except Exception as e:
                note_errors([e])
                failures += 1

    await asyncio.gather(*(lane() for _ in range(lanes)))

    # Who talks to whom: each visitor says hello with its own number.
    by_text: dict[str, Visitor] = {}
    for i, visitor in enumerate(visitors):
        if visitor.token is None:
            continue
        text = f"hello {i}"
        by_text[text] = visitor
        await visitor.send({"type": "send", "client_id": f"hello{i}", "text": text})
    deadline = now() + 20
    while now() < deadline:
        if sum(len(a.first_texts) for a in advisors) >= len(by_text):
            break
        await asyncio.sleep(0.05)
    pairs = []
    for advisor in advisors:
        for conversation, text in advisor.first_texts.items():
            if text in by_text:
                pairs.append(Pair(by_text[text], advisor, conversation))
    return pairs, failures


# --- offered load ------------------------------------------------------------------------------


async def offer(senders: list[Any], rate: float, duration: float, ledger: Ledger,
                say: Any) -> int:
    """Send `rate` texts a second in total for `duration` seconds, round robin over the
    senders, alternating direction; latency counts from the intended send time (so a late
    sender does not hide a slow server). Returns how many were sent."""
    total = int(rate * duration)
    start = now() + 0.05
    for k in range(total):
        due = start + k / rate
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        message_id = ledger.new()
        target = senders[k % len(senders)]
        await say(target, message_id, due, (k // len(senders)) % 2 == 0)
    return total


async def drain(ledger: Ledger, timeout: float = 5) -> None:
    deadline = now() + timeout
    while now() < deadline and not ledger.all_arrived():
        await asyncio.sleep(0.05)


def measured(ledger: Ledger, sent: int) -> dict[str, Any]:
    return {
        "sent": sent,
        "delivered": len(ledger.received),
        "lost": ledger.lost,
        "duplicated": ledger.duplicated,
        **summary(ledger.latencies),
    }


async def run_rates(senders: list[Any], rates: list[float], duration: float, ledger_of: Any,
                    say: Any, server: Server) -> list[dict[str, Any]]:
    results = []
    for rate in rates:
        ledger = ledger_of()
        cpu_before = server.cpu_seconds()
        started = now()
        sent = await offer(senders, rate, duration, ledger, say)
        await drain(ledger)
        elapsed = now() - started
        cpu = server.cpu_seconds() - cpu_before
        results.append({**measured(ledger, sent), "offered_rate": rate,
                        "server_cpu": round(cpu / elapsed, 2),
                        "server_cpu_ms_per_msg": round(1000 * cpu / max(1, sent), 3)})
        await asyncio.sleep(0.5)
    return results


class LedgerBox:
    """The pairs keep one ledger object; each rate gets a fresh one swapped in."""

    def __init__(self, sockets: list[Socket]) -> None:
        self.sockets = sockets

    def __call__(self) -> Ledger:
        ledger = Ledger()
        for socket in self.sockets:
            socket.ledger = ledger
        return ledger


# --- steady ------------------------------------------------------------------------------------


async def steady(stack: Stack, *, conversations: int, rates: list[float],
                 duration: float) -> list[dict[str, Any]]:
    """`conversations` conversations (two sockets each) on one process; texts both ways at
    each offered rate; the same on the bare relay, same server, same layer."""
    # The bare relay first.
    relay = await asyncio.to_thread(stack.start_relay)
    ledger = Ledger()
    peers = []
    for room in range(conversations):
        peers.append((RelayPeer(relay.url, room, origin_of, ledger),
                      RelayPeer(relay.url, room, origin_of, ledger)))
    flat = [p for pair in peers for p in pair]
    results = await gather_limited([p.open() for p in flat], 50)
    relay_failures = sum(1 for r in results if isinstance(r, BaseException))

    async def relay_say(pair, message_id, at, first):
        await (pair[0] if first else pair[1]).say(message_id, at)

    relay_results = await run_rates(peers, rates, duration, LedgerBox(flat), relay_say, relay)
    await gather_limited([p.close() for p in flat], 100)
    await asyncio.to_thread(relay.stop)

    # The project, same load.
    (server,) = await asyncio.to_thread(stack.start_project, 1)
    ledger = Ledger()
    pairs, failures = await open_pairs([server.url], [server.url], conversations, ledger)
    sockets = [s for p in pairs for s in (p.visitor, p.advisor)]

    async def project_say(pair, message_id, at, from_visitor):
        await pair.say(message_id, at, from_visitor=from_visitor)

    project_results = await run_rates(pairs, rates, duration, LedgerBox(sockets), project_say,
                                      server)
    await gather_limited([s.close() for s in sockets], 100)
    await asyncio.to_thread(server.stop)

    lines = []
    for mine, bare in zip(project_results, relay_results, strict=True):
        lines.append({
            "scenario": "steady",
            "processes": 1,
            "sockets": 2 * len(pairs),
            "conversations": len(pairs),
            "duration_s": duration,
            **mine,
            "connect_failures": failures + (conversations - len(pairs)),
            "relay_p50_ms": bare["p50_ms"],
            "relay_p99_ms": bare["p99_ms"],
            "relay_max_ms": bare["max_ms"],
            "relay_delivered": bare["delivered"],
            "relay_lost": bare["lost"],
            "relay_connect_failures": relay_failures,
            "relay_server_cpu": bare["server_cpu"],
            "relay_server_cpu_ms_per_msg": bare["server_cpu_ms_per_msg"],
        })
    return lines


__all__ = ["ms", "percentile", "steady"]
