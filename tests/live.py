"""Real Daphne processes for tests: the service exactly as `manage.py serve` runs it, on a free
port of 127.0.0.1, against the test database of the current run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that must use this test run's database and layer."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        user = quote(db.get("USER") or "postgres")
        password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        env["DATABASE_URL"] = (
            f"postgres://{user}{password}@{host}:{port}/{connection.settings_dict['NAME']}"
        )
    else:
        env.pop("DATABASE_URL", None)
        env["SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    env.update(extra)
    return env


def wait_for_port(
    port: int, process: subprocess.Popen, timeout: float = 20, log_path: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = ""
            if log_path is not None:
                output = Path(log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server exited early with code {process.returncode}:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout} s")


class Daphne:
    """One server process. `url` is http://127.0.0.1:PORT; `kill()` ends it abruptly."""

    def __init__(self, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = child_env(**env)
        self.process: subprocess.Popen | None = None
        self.log_path = tempfile.mkstemp(prefix="daphne-", suffix=".log")[1]

    def output(self) -> str:
        """What the server printed (it logs no client addresses: -v 0)."""
        return Path(self.log_path).read_text(errors="replace")

    def start(self) -> Daphne:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop/kill)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)],
            # A file, not a pipe: a pipe nobody reads would block the server once it is full.
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, log_path=self.log_path)
        return self

    def kill(self) -> None:
        """Like a crash: SIGKILL, no goodbye to the clients."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@contextmanager
def daphne(**env: str):
    server = Daphne(**env).start()
    try:
        yield server
    finally:
        server.stop()
