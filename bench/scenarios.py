"""The benchmark's scenarios. Each returns the JSON lines it reports (a list of dicts)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

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
        [
            AdvisorProfile(
                user=u, display_name=f"Advisor {i}", capacity=capacity, languages=["sv", "en"]
            )
            for i, u in enumerate(users)
        ]
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


async def open_pairs(
    urls_for_visitors: list[str],
    urls_for_advisors: list[str],
    count: int,
    ledger: Ledger,
    *,
    lanes: int = 10,
    fallback: bool = False,
) -> tuple[list[Pair], int]:
    """`count` conversations through the protocol: advisors connect, then visitors start and
    advisors take the next one, a few lanes at a time so the queue stays short. Which advisor
    got whose conversation is learnt from a hello text each visitor sends.
    Returns the pairs and the number of failed connections."""
    cookies = await advisors_for(count)
    failures = 0

    advisors = []
    for i, cookie in enumerate(cookies):
        advisor = Advisor(addresses(urls_for_advisors, i, fallback), origin_of, ledger, cookie)
        advisor.skip_prefixes = (QUEUE_PREFIX,)
        advisors.append(advisor)

    async def open_advisor(advisor: Advisor) -> None:
        hello = None
        await advisor.open()
        hello = advisor.wait_for(lambda f: f["type"] == "hello")
        await hello

    visitors = [
        Visitor(addresses(urls_for_visitors, i, fallback), origin_of, ledger) for i in range(count)
    ]
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
                    lambda f: (
                        f["type"] == "conversation" and f["conversation"]["status"] == "active"
                    )
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


def addresses(urls: list[str], i: int, fallback: bool) -> list[str]:
    """Client i's server, and with `fallback` the others after it (where it goes when its
    own dies, as it would behind one address in front of several processes)."""
    first = i % len(urls)
    return urls[first:] + urls[:first] if fallback else [urls[first]]


# --- offered load ------------------------------------------------------------------------------


async def offer(senders: list[Any], rate: float, duration: float, ledger: Ledger, say: Any) -> int:
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
    """Wait until everything sent has arrived, or nothing more has arrived for `timeout`
    seconds: a server that is behind but still delivering is waited for (what arrives late
    shows in the latencies), so "lost" counts only what never came."""
    arrived, quiet_since = len(ledger.received), now()
    while not ledger.all_arrived():
        await asyncio.sleep(0.05)
        if len(ledger.received) != arrived:
            arrived, quiet_since = len(ledger.received), now()
        elif now() - quiet_since > timeout:
            return


def measured(ledger: Ledger, sent: int) -> dict[str, Any]:
    return {
        "sent": sent,
        "delivered": len(ledger.received),
        "lost": ledger.lost,
        "duplicated": ledger.duplicated,
        **summary(ledger.latencies),
    }


async def run_rates(
    senders: list[Any],
    rates: list[float],
    duration: float,
    ledger_of: Any,
    say: Any,
    server: Server,
) -> list[dict[str, Any]]:
    results = []
    for rate in rates:
        ledger = ledger_of()
        cpu_before = server.cpu_seconds()
        started = now()
        sent = await offer(senders, rate, duration, ledger, say)
        await drain(ledger)
        elapsed = now() - started
        cpu = server.cpu_seconds() - cpu_before
        results.append(
            {
                **measured(ledger, sent),
                "offered_rate": rate,
                "server_cpu": round(cpu / elapsed, 2),
                "server_cpu_ms_per_msg": round(1000 * cpu / max(1, sent), 3),
            }
        )
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


async def steady(
    stack: Stack, *, conversations: int, rates: list[float], duration: float
) -> list[dict[str, Any]]:
    """`conversations` conversations (two sockets each) on one process; texts both ways at
    each offered rate; the same on the bare relay, same server, same layer."""
    # The bare relay first.
    relay = await asyncio.to_thread(stack.start_relay)
    ledger = Ledger()
    peers = []
    for room in range(conversations):
        peers.append(
            (
                RelayPeer(relay.url, room, origin_of, ledger),
                RelayPeer(relay.url, room, origin_of, ledger),
            )
        )
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

    project_results = await run_rates(
        pairs, rates, duration, LedgerBox(sockets), project_say, server
    )
    await gather_limited([s.close() for s in sockets], 100)
    await asyncio.to_thread(server.stop)

    lines = []
    for mine, bare in zip(project_results, relay_results, strict=True):
        lines.append(
            {
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
            }
        )
    return lines


# --- surge -------------------------------------------------------------------------------------


async def surge(
    stack: Stack, *, visitors: int, advisors: int, arrival_s: float
) -> list[dict[str, Any]]:
    """`visitors` arrive evenly within `arrival_s` while `advisors` take conversations (take,
    a short talk, close, take the next). Measured: connect failures; for each take, how long
    until every visitor then waiting showed their right place; take latency."""
    from django.db.models import Q

    from advice.models import Conversation, hash_token

    (server,) = await asyncio.to_thread(stack.start_project, 1)
    ledger = Ledger()
    cookies = await advisors_for(advisors, capacity=3)
    consoles = [Advisor([server.url], origin_of, ledger, c) for c in cookies]
    for console in consoles:
        console.skip_prefixes = (QUEUE_PREFIX,)
    results = await gather_limited([c.open() for c in consoles], 20)
    failures = sum(1 for r in results if isinstance(r, BaseException))
    note_errors(results)
    crowd = [Visitor([server.url], origin_of, ledger) for _ in range(visitors)]
    started_at: dict[Visitor, float] = {}
    takes: list[tuple[float, str]] = []
    take_latencies: list[float] = []
    running = True

    async def arrive(i: int, visitor: Visitor) -> None:
        nonlocal failures
        await asyncio.sleep(i * arrival_s / visitors)
        try:
            await visitor.open()
            await visitor.start()
            started_at[visitor] = now()
        except Exception as e:
            note_errors([e])
            failures += 1

    async def work(console: Advisor) -> None:
        await asyncio.sleep(0.5)
        while running:
            sent = now()
            answer = console.wait_for(
                lambda f: (
                    (f["type"] == "conversation" and f["conversation"]["status"] == "active")
                    or (f["type"] == "error" and f.get("ref") == "take_next")
                ),
                10,
            )
            await console.send({"type": "take_next"})
            try:
                frame = await answer
            except Exception as e:
                note_errors([e])
                continue
            if frame["type"] == "error":
                await asyncio.sleep(0.2)
                continue
            took = now()
            take_latencies.append((took - sent) * 1000)
            public_id = frame["conversation"]["id"]
            takes.append((took, public_id))
            await asyncio.sleep(0.5)  # a (very) short conversation
            closed = console.wait_for(
                lambda f, public_id=public_id: (
                    f["type"] == "conversation"
                    and f["conversation"]["id"] == public_id
                    and f["conversation"]["status"] == "closed"
                ),
                10,
            )
            await console.send(
                {"type": "close", "conversation": public_id, "outcome": "advice_given"}
            )
            try:
                await closed
            except Exception as e:
                note_errors([e])

    cpu_before = server.cpu_seconds()
    began = now()
    working = [asyncio.create_task(work(c)) for c in consoles]
    await asyncio.gather(*(arrive(i, v) for i, v in enumerate(crowd)))
    await asyncio.sleep(3)
    running = False
    await asyncio.gather(*working)
    elapsed = now() - began
    cpu = server.cpu_seconds() - cpu_before
    # The last places settle: wait until no visitor has been sent a new place for a second
    # (at most 10 s). A fixed pause had ended the watching while the places after the last
    # takes were still on their way, and counted them as never right.
    frames_seen, quiet_since, give_up = -1, now(), now() + 10
    while now() < give_up:
        frames_now = sum(len(v.positions) for v in crowd)
        if frames_now != frames_seen:
            frames_seen, quiet_since = frames_now, now()
        elif now() - quiet_since >= 1.0:
            break
        await asyncio.sleep(0.1)

    # The truth, from the database: queue order is creation order (none is urgent here), and
    # who was waiting at a take is read from the rows' own times (a visitor's conversation
    # exists before its "started" frame reaches the load generator).
    def order() -> tuple[dict[Visitor, int], dict[str, int], dict[int, tuple[float, float]]]:
        tokens = {hash_token(v.token): v for v in crowd if v.token}
        rows = Conversation.objects.filter(Q(token_hash__in=list(tokens))).values_list(
            "token_hash", "pk", "public_id", "created_at", "taken_at"
        )
        by_token = {tokens[h]: pk for h, pk, *_ in rows}
        by_public = {str(public): pk for _, pk, public, *_ in rows}
        times = {
            pk: (created.timestamp(), taken.timestamp() if taken else float("inf"))
            for _, pk, _, created, taken in rows
        }
        return by_token, by_public, times

    from asgiref.sync import sync_to_async

    id_of_visitor, id_of_public, times = await sync_to_async(order)()
    lags = checked_places(crowd, takes, id_of_visitor, id_of_public, times)
    frames = sum(len(v.positions) for v in crowd)
    await gather_limited([c.close() for c in [*consoles, *crowd]], 200)
    await asyncio.to_thread(server.stop)
    return [
        {
            "scenario": "surge",
            "processes": 1,
            "sockets": visitors + advisors,
            "visitors": visitors,
            "advisors": advisors,
            "arrival_s": arrival_s,
            "offered_rate": round(visitors / arrival_s, 1),
            "connect_failures": failures,
            "takes": len(take_latencies),
            **{f"take_{k}": v for k, v in summary(take_latencies).items()},
            "place_checks": len(lags["lags"]),
            "places_never_right": lags["never"],
            "places_right_p50_ms": ms(percentile(lags["lags"], 50)),
            "places_right_p99_ms": ms(percentile(lags["lags"], 99)),
            "places_right_max_ms": ms(max(lags["lags"], default=None) if lags["lags"] else None),
            "queue_frames_per_visitor": round(frames / max(1, len(started_at)), 1),
            "server_cpu": round(cpu / elapsed, 2),
        }
    ]


def checked_places(
    crowd: list[Visitor],
    takes: list[tuple[float, str]],
    id_of_visitor: dict[Visitor, int],
    id_of_public: dict[str, int],
    times: dict[int, tuple[float, float]],
) -> dict[str, Any]:
    """For each take and each visitor waiting behind it then: the time from the take (as the
    advisor saw it) until the visitor showed a place no higher than their true one (places
    only fall here). Who was waiting, and in which order, comes from the database's own
    times."""
    import bisect

    # Queue order as the service keeps it: by creation time, then id. (Ids are not in creation
    # order: the time is taken before the INSERT, and starts run on several threads.)
    visitors = sorted(
        ((id_of_visitor[v], v) for v in crowd if v in id_of_visitor),
        key=lambda pair: (times[pair[0]][0], pair[0]),
    )
    rank = {pk: n for n, (pk, _) in enumerate(visitors)}
    times_of = {v: [t for t, _ in v.positions] for _, v in visitors}
    lags: list[float] = []
    never = 0
    for at, public_id in sorted(takes):
        taken = id_of_public.get(public_id)
        if taken is None:
            continue
        moment = times[taken][1]  # when the database recorded the take
        waiting = [pk for pk, _ in visitors if times[pk][0] <= moment < times[pk][1]]
        index = {pk: place for place, pk in enumerate(waiting, start=1)}
        for pk, visitor in visitors:
            if pk not in index or rank[pk] <= rank.get(taken, -1):
                continue
            truth = index[pk]
            shown = bisect.bisect_right(times_of[visitor], at) - 1
            if shown >= 0 and visitor.positions[shown][1] <= truth:
                lags.append(0.0)
                continue
            later = next((t for t, p in visitor.positions[shown + 1 :] if p <= truth), None)
            if later is None:
                # Taken (or the run ended) before it showed: not a wrong place.
                if times[pk][1] < float("inf"):
                    continue
                never += 1
            else:
                lags.append((later - at) * 1000)
    return {"lags": lags, "never": never}


# --- failover ------------------------------------------------------------------------------------


async def failover(
    stack: Stack, *, conversations: int, rate: float, duration: float
) -> list[dict[str, Any]]:
    """Two processes, conversations across them, texts both ways; one process is killed half
    way. Its clients reconnect to the other, resume from their last seq and send again what
    was never acknowledged. Measured: lost, duplicated, and the time until every client of
    the killed process had resumed."""
    servers = await asyncio.to_thread(stack.start_project, 2)
    urls = [s.url for s in servers]
    ledger = Ledger()
    # Visitor i on process i % 2, its advisor on the other: every conversation crosses.
    pairs, failures = await open_pairs(urls, urls[::-1], conversations, ledger, fallback=True)
    sockets = [s for p in pairs for s in (p.visitor, p.advisor)]
    victim = servers[0]
    on_victim = [s for s in sockets if s.url == victim.url]
    resumed_at: dict[Socket, float] = {}
    killed_at = 0.0

    async def come_back(client: Socket) -> None:
        nonlocal failures
        await client.closed_event.wait()
        client.url_index += 1
        try:
            await client.open_somewhere(now() + 60)
            await client.resume()
            resumed_at[client] = now()
        except Exception as e:
            note_errors([e])
            failures += 1

    async def say(pair: Pair, message_id: int, at: float, from_visitor: bool) -> None:
        # Not acknowledged when its socket is gone: sent again after the resume.
        with contextlib.suppress(ConnectionClosed):
            await pair.say(message_id, at, from_visitor=from_visitor)

    async def kill_half_way() -> None:
        nonlocal killed_at
        await asyncio.sleep(duration / 2)
        killed_at = now()
        await asyncio.to_thread(victim.kill)

    returning = [asyncio.create_task(come_back(c)) for c in on_victim]
    killer = asyncio.create_task(kill_half_way())
    sent = await offer(pairs, rate, duration, ledger, say)
    await killer
    await asyncio.wait(returning, timeout=60)
    deadline = now() + 20
    while now() < deadline and not ledger.all_arrived():
        for client in sockets:
            if client.unacked and not client.closed_event.is_set():
                with contextlib.suppress(ConnectionClosed):
                    await client.resend()
        await asyncio.sleep(0.5)
    resume_times = [(t - killed_at) * 1000 for t in resumed_at.values()]
    await gather_limited([s.close() for s in sockets], 200)
    await asyncio.to_thread(servers[1].stop)
    return [
        {
            "scenario": "failover",
            "processes": 2,
            "sockets": len(sockets),
            "conversations": len(pairs),
            "offered_rate": rate,
            "duration_s": duration,
            **measured(ledger, sent),
            "connect_failures": failures + (conversations - len(pairs)),
            "reconnect_attempts_failed": sum(c.connect_failures for c in on_victim),
            "clients_on_killed_process": len(on_victim),
            "clients_resumed": len(resumed_at),
            "all_resumed_s": round(max(resume_times) / 1000, 2) if resume_times else None,
            "resume_p50_ms": ms(percentile(resume_times, 50)),
            "resume_p99_ms": ms(percentile(resume_times, 99)),
        }
    ]


# --- memory --------------------------------------------------------------------------------------


async def memory(stack: Stack, *, visitors: int) -> list[dict[str, Any]]:
    """Resident memory per idle visitor socket: `visitors` visitors connect and start (each
    waits in the queue), then nothing happens."""
    (server,) = await asyncio.to_thread(stack.start_project, 1)
    ledger = Ledger()
    # Warm up: the first connections import and allocate what every later one shares.
    warm = [Visitor([server.url], origin_of, ledger) for _ in range(20)]
    await gather_limited([_arrive(v) for v in warm], 20)
    await gather_limited([v.close() for v in warm], 20)
    await asyncio.sleep(2)
    before = server.rss_bytes()
    crowd = [Visitor([server.url], origin_of, ledger) for _ in range(visitors)]
    for visitor in crowd:
        visitor.skip_prefixes = ('{"type":"queue"',)
    results = await gather_limited([_arrive(v) for v in crowd], 50)
    failures = sum(1 for r in results if isinstance(r, BaseException))
    note_errors(results)
    await asyncio.sleep(3)
    after = server.rss_bytes()
    connected = visitors - failures
    await gather_limited([v.close() for v in crowd], 200)
    await asyncio.to_thread(server.stop)
    return [
        {
            "scenario": "memory",
            "processes": 1,
            "sockets": connected,
            "connect_failures": failures,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kb_per_idle_socket": round((after - before) / 1024 / max(1, connected), 1),
        }
    ]


async def _arrive(visitor: Visitor) -> None:
    await visitor.open()
    await visitor.start()
