"""The stack the benchmark runs against, started by the benchmark itself: its own PostgreSQL
database (never the dev or test one), the Redis channel layer under a prefix of its own, and
N Daphne processes started the way production starts them (`manage.py serve`), or the bare
relay (bench/relay_asgi.py) on the same Daphne, settings and layer."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# Where the servers' own logs go (warnings and errors only: LOG_LEVEL=WARNING).
LOGS = ROOT / "bench" / "results"

# The server gets core 0, the load generator core 1 (PostgreSQL and Redis float), so the two
# sides do not take each other's time. On a one-core machine nothing is pinned.
SERVER_CPUS = "0"
LOAD_CPUS = {1}


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def pin_load_generator() -> bool:
    if not can_pin():
        return False
    os.sched_setaffinity(0, LOAD_CPUS)
    return True


def raise_file_limit() -> None:
    """Thousands of sockets: lift the soft limit on open files to the hard one (inherited by
    the servers this process starts)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_database_url(database_url: str, name: str | None = None) -> str:
    """The same server as DATABASE_URL, another database: <name>_bench unless named."""
    parts = urlsplit(database_url)
    base = parts.path.lstrip("/") or "advice"
    return urlunsplit(parts._replace(path="/" + (name or f"{base}_bench")))


class Stack:
    """Environment and processes of one benchmark run."""

    def __init__(self, database_url: str, redis_url: str, *, pin: bool = True) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.pin = pin and can_pin()
        self.prefix = f"bench{os.getpid()}x{secrets.token_hex(3)}"
        from cryptography.fernet import Fernet

        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CHANNEL_PREFIX": self.prefix,
            "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
            "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        self.servers: list[Server] = []

    # --- the database ------------------------------------------------------------------------

    def create_database(self) -> None:
        """Drop and create the bench database, then migrate it."""
        import psycopg

        parts = urlsplit(self.database_url)
        name = parts.path.lstrip("/")
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def clear_conversations(self) -> None:
        """A clean queue for the next scenario (the last one may leave visitors waiting)."""
        import psycopg

        from advice.models import Conversation

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(f'TRUNCATE "{Conversation._meta.db_table}" CASCADE')

    def setup_django(self) -> None:
        """This process talks to the bench database too (advisors, sessions, checks)."""
        for key in (
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",
            "REDIS_URL",
            "CHANNEL_PREFIX",
            "SECRET_KEY",
            "ENCRYPTION_KEYS",
            "ALLOWED_HOSTS",
            "DEBUG",
            "LOG_LEVEL",
        ):
            os.environ[key] = self.env[key]
        import django

        django.setup()

    # --- servers -----------------------------------------------------------------------------

    def start_project(self, count: int = 1, **extra_env: str) -> list[Server]:
        started = [
            Server(self, [sys.executable, "manage.py", "serve", "--port", "{port}"], extra_env)
            for _ in range(count)
        ]
        for server in started:
            server.start()
        for server in started:
            server.wait_ready()
        self.servers += started
        return started

    def start_relay(self) -> Server:
        from config.management.commands.serve import daphne_args

        args = daphne_args(host="127.0.0.1", port=0)
        args[args.index("-p") + 1] = "{port}"
        args[-1] = "bench.relay_asgi:application"
        server = Server(self, [sys.executable, "-m", "daphne", *args], {})
        server.start()
        server.wait_ready()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


class Server:
    def __init__(self, stack: Stack, command: list[str], extra_env: dict[str, str]) -> None:
        self.stack = stack
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        if stack.pin:
            self.command = ["taskset", "-c", SERVER_CPUS, *self.command]
        self.env = {**stack.env, **extra_env}
        self.url = f"ws://127.0.0.1:{self.port}"
        self.origin = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # The server's warnings and errors go to a file (a pipe nobody reads would fill up and
        # stop the server).
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"server-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not listen on {self.port} within {timeout} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server process (after exec, the pid is Daphne itself)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to the clients."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
