"""The `sms` scenario: signed inbound webhooks at rising rates against one Daphne process on
PostgreSQL, started the way production starts it (`manage.py serve`).

Each request is what Twilio sends (every field, signed with the twilio SDK's RequestValidator)
for a new text, from a pool of senders so that some open conversations and some continue
them. The load is open-loop: request i is due at start + i/rate whether or not earlier ones have
been answered, and its latency is counted from when it was due, so a server that falls behind
shows it. Afterwards the database is checked: every text answered 200 is stored exactly once.

    python -m bench.sms                       # 100, 300, 600 webhooks/s, 5 s each
    python -m bench.sms --rates 300 --duration 10 --worker

Needs DATABASE_URL (PostgreSQL; a database of its own beside it, <name>_bench_sms, made afresh)
and REDIS_URL. `run(**options)` returns the result lines; `scenario(stack, ...)` runs on a stack
`python -m bench` has already started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlencode

ACCOUNT_SID = "AC" + "be" * 16
AUTH_TOKEN = "bench-auth-token-" + "0" * 16
# What the server believes its public URL is; the signatures are made for it.
PUBLIC_URL = "https://bench.example.se"
LINE_NUMBER = "+46101234500"
DEFAULT_RATES = [100.0, 300.0, 600.0]


def twilio_env() -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_WEBHOOK_BASE_URL": PUBLIC_URL,
        "TWILIO_FROM_NUMBER": LINE_NUMBER,
        # The bench measures the webhook; nothing is deleted at a Twilio that is not there.
        "TWILIO_DELETE_MESSAGES": "false",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    }


def signed_requests(count: int, senders: int) -> list[tuple[bytes, str, str]]:
    """(body, signature, MessageSid) for `count` texts from `senders` different numbers."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    url = PUBLIC_URL + "/sms/inbound"
    prepared = []
    for n in range(count):
        sid = "SM" + secrets.token_hex(16)
        sender = f"+4670{(n % senders):07d}"
        fields = {
            "ToCountry": "SE",
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": f"Hej, jag undrar över en elev (text {n}).",
            "FromCountry": "SE",
            "To": LINE_NUMBER,
            "ToZip": "",
            "NumSegments": "1",
            "ReferralNumMedia": "0",
            "MessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": sender,
            "ApiVersion": "2010-04-01",
        }
        prepared.append((urlencode(fields).encode(), validator.compute_signature(url, fields), sid))
    return prepared


async def offer(
    base_url: str, rate: float, duration: float, requests: list[tuple[bytes, str, str]]
) -> dict[str, Any]:
    import aiohttp

    from bench.stats import summary

    count = len(requests)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    answered_sids: list[str] = []
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.2

        async def one(index: int) -> None:
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body, signature, sid = requests[index]
            try:
                async with session.post(
                    base_url + "/sms/inbound",
                    data=body,
                    headers={
                        "X-Twilio-Signature": signature,
                        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                        "User-Agent": "TwilioProxy/1.1",
                    },
                ) as response:
                    await response.read()
                    key = str(response.status)
            except Exception as error:  # a refused or timed-out request is an error, counted
                key = type(error).__name__
            finished = time.perf_counter()
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append((finished - due) * 1000)
                answered_sids.append(sid)

        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
    ok = statuses.get("200", 0)
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "sent": count,
        "ok": ok,
        "errors": count - ok,
        "statuses": statuses,
        "throughput": round(ok / elapsed, 1) if elapsed > 0 else None,
        **summary(latencies),
        "_sids": answered_sids,
    }


def stored_once(sids: list[str]) -> tuple[int, int]:
    """(texts answered 200 and stored, rows stored for them): equal when nothing is lost or
    doubled."""
    from sms.models import InboundSms

    found = 0
    for chunk in range(0, len(sids), 1000):
        found += InboundSms.objects.filter(message_sid__in=sids[chunk : chunk + 1000]).count()
    return len(sids), found


def drained_within(limit: float) -> float | None:
    """Seconds until no stored text waits for the worker (None: not within `limit`)."""
    from sms.models import InboundSms

    started = time.monotonic()
    while time.monotonic() - started < limit:
        if not InboundSms.objects.filter(processed_at__isnull=True).exists():
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


async def scenario(
    stack: Any, *, rates: list[float], duration: float, worker: bool = False
) -> list[dict[str, Any]]:
    """Run on a started `bench.stack.Stack` (its database migrated, Django set up here)."""
    from asgiref.sync import sync_to_async

    [server] = stack.start_project(1, **twilio_env())
    base_url = f"http://127.0.0.1:{server.port}"
    worker_process = None
    if worker:
        import subprocess

        from bench.stack import ROOT

        worker_process = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env={**stack.env, **twilio_env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    lines = []
    try:
        # Warm up: the first requests open database connections and fill caches.
        await offer(base_url, 50.0, 1.0, signed_requests(50, 10))
        for rate in rates:
            # A second at the rate first, not measured: the server's database pool grows to
            # what the rate needs (psycopg opens connections on demand, and keeps them), and
            # that ramp is not the steady state the line reports.
            warm = max(1, int(rate))
            await offer(base_url, rate, 1.0, signed_requests(warm, senders=max(1, warm // 3)))
            count = max(1, int(rate * duration))
            requests = signed_requests(count, senders=max(1, count // 3))
            cpu_before = server.cpu_seconds()
            result = await offer(base_url, rate, duration, requests)
            cpu = server.cpu_seconds() - cpu_before
            sids = result.pop("_sids")
            answered, stored = await sync_to_async(stored_once)(sids)
            line = {
                "scenario": "sms",
                "processes": 1,
                "worker": worker,
                **result,
                "stored": stored,
                "lost": answered - stored,
                "server_cpu_s": round(cpu, 2),
                "server_cpu_ms_per_webhook": round(1000 * cpu / max(1, result["ok"]), 2),
            }
            if worker:
                # How long after the last webhook the worker had every text in a conversation.
                line["worker_backlog_drained_s"] = await sync_to_async(drained_within)(60.0)
            lines.append(line)
            await asyncio.sleep(1.0)
    finally:
        if worker_process is not None:
            import signal

            os.killpg(worker_process.pid, signal.SIGTERM)
            worker_process.wait(10)
        server.stop()
        stack.servers.remove(server)
    return lines


def run(**options: Any) -> list[dict[str, Any]]:
    """Start a stack of our own, run the scenario, return one dict per rate.

    options: rates (list of webhooks/s), duration (s per rate), worker (run `manage.py worker`
    beside the server), database (name of the bench database), pin (server and load on their
    own cores, default true)."""
    from bench.stack import (
        Stack,
        bench_database_url,
        pin_load_generator,
        raise_file_limit,
    )

    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url:
        raise SystemExit("bench.sms needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    raise_file_limit()
    pinned = pin_load_generator() if options.get("pin", True) else False
    name = options.get("database") or ((database_url.rsplit("/", 1)[-1] or "advice") + "_bench_sms")
    stack = Stack(bench_database_url(database_url, name), redis_url, pin=pinned)
    stack.create_database()
    stack.setup_django()
    try:
        return asyncio.run(
            scenario(
                stack,
                rates=list(options.get("rates") or DEFAULT_RATES),
                duration=float(options.get("duration") or 5.0),
                worker=bool(options.get("worker")),
            )
        )
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sms",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rates",
        default=",".join(str(int(r)) for r in DEFAULT_RATES),
        help="offered webhooks per second, comma-separated",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run `manage.py worker` beside the server (processing the texts)",
    )
    parser.add_argument("--database", help="the bench database's name")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    args = parser.parse_args(argv)
    lines = run(
        rates=[float(r) for r in args.rates.split(",")],
        duration=args.duration,
        worker=args.worker,
        database=args.database,
        pin=not args.no_pin,
    )
    for line in lines:
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
