"""`python -m bench` (`make bench`): the benchmark against the bare stack.

Needs DATABASE_URL (PostgreSQL; the bench uses its own database beside it, <name>_bench, made
afresh) and REDIS_URL. Prints one JSON line per scenario (and per offered rate), writes them to
bench/results/latest.jsonl and, for a full run, draws docs/performance.png.

    python -m bench                      # every scenario, full size
    python -m bench --smoke              # seconds: tiny sizes, for CI
    python -m bench --scenario steady --rates 100,300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from advice import server_tuning
from bench.stack import ROOT, Stack, bench_database_url, pin_load_generator, raise_file_limit

SCENARIOS = ["steady", "surge", "failover", "memory", "sms"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: a check, not a measurement"
    )
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--rates", help="steady: offered rates, comma-separated (msgs/s)")
    parser.add_argument("--duration", type=float, help="steady: seconds per rate")
    parser.add_argument("--conversations", type=int, help="steady and failover: conversations")
    parser.add_argument("--visitors", type=int, help="surge and memory: visitors")
    parser.add_argument("--database", help="name of the bench database (default <name>_bench)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to cores")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.jsonl"))
    parser.add_argument("--plot", help="PNG to draw (default docs/performance.png on a full run)")
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> dict:
    if args.smoke:
        base = {
            "conversations": 10,
            "rates": [20.0],
            "duration": 1.0,
            "visitors": 30,
            "advisors": 3,
            "arrival_s": 1.0,
            "failover_rate": 20.0,
            "failover_s": 3.0,
            "sms_rates": [10.0],
            "sms_duration": 1.0,
        }
    else:
        base = {
            "conversations": 500,
            "rates": [100.0, 300.0, 1000.0],
            "duration": 15.0,
            "visitors": 2000,
            "advisors": 20,
            "arrival_s": 10.0,
            "failover_rate": 100.0,
            "failover_s": 10.0,
            "sms_rates": [100.0, 300.0, 600.0],
            "sms_duration": 5.0,
        }
    if args.rates:
        base["rates"] = [float(r) for r in args.rates.split(",")]
    if args.duration:
        base["duration"] = args.duration
    if args.conversations:
        base["conversations"] = args.conversations
    if args.visitors:
        base["visitors"] = args.visitors
    return base


async def sms_scenario(stack: Stack, *, rates: list[float], duration: float) -> list[dict]:
    """The SMS channel's scenario (bench/sms.py, from the SMS issue): signed inbound webhooks
    per second. Skipped, with a line that says so, where that module is not there."""
    try:
        from bench import sms
    except ImportError:
        return [{"scenario": "sms", "skipped": "bench/sms.py is not there yet"}]
    return await sms.scenario(stack, rates=rates, duration=duration)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import channels
    import channels_redis
    import daphne
    import django
    import psycopg
    import redis

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "channels": channels.__version__,
        "daphne": daphne.__version__,
        "channels_redis": channels_redis.__version__,
        "redis_py": redis.__version__,
        "psycopg": psycopg.__version__,
    }


async def run(args: argparse.Namespace) -> list[dict]:
    from bench import scenarios

    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url:
        sys.exit("python -m bench needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    raise_file_limit()
    pinned = False if args.no_pin else pin_load_generator()
    stack = Stack(bench_database_url(database_url, args.database), redis_url, pin=pinned)
    await asyncio.to_thread(stack.create_database)
    stack.setup_django()
    size = sizes(args)
    chosen = args.scenario or SCENARIOS
    lines: list[dict] = []

    def emit(found: list[dict]) -> None:
        stack.clear_conversations()
        for line in found:
            line.setdefault("smoke", args.smoke)
            print(json.dumps(line), flush=True)
            lines.append(line)

    try:
        if "steady" in chosen:
            emit(
                await scenarios.steady(
                    stack,
                    conversations=size["conversations"],
                    rates=size["rates"],
                    duration=size["duration"],
                )
            )
        if "surge" in chosen:
            emit(
                await scenarios.surge(
                    stack,
                    visitors=size["visitors"],
                    advisors=size["advisors"],
                    arrival_s=size["arrival_s"],
                )
            )
        if "failover" in chosen:
            emit(
                await scenarios.failover(
                    stack,
                    conversations=size["conversations"],
                    rate=size["failover_rate"],
                    duration=size["failover_s"],
                )
            )
        if "memory" in chosen:
            emit(await scenarios.memory(stack, visitors=size["visitors"]))
        if "sms" in chosen:
            emit(await sms_scenario(stack, rates=size["sms_rates"], duration=size["sms_duration"]))
    finally:
        stack.stop()
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    # The load generator holds thousands of sockets too: with CPython's default thresholds its
    # own full collections held its reading of answers for up to 150 ms, and that counted as
    # the server's latency. It collects as the server does.
    server_tuning.collect_old_objects_less_often()
    lines = asyncio.run(run(args))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "scenario": "run",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "pinned": not args.no_pin,
        **machine(),
    }
    output.write_text("".join(json.dumps(line) + "\n" for line in [header, *lines]))
    plot = args.plot or (None if args.smoke else str(ROOT / "docs" / "performance.png"))
    if plot:
        from bench.plot import draw

        draw([line for line in lines if line["scenario"] == "steady"], Path(plot))


if __name__ == "__main__":
    main()
