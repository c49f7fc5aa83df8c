"""Local stand-ins for Twilio, on 127.0.0.1 only.

- `FakeTwilio`: a small Messages API (create, list, fetch, delete) that keeps what it was sent,
  answers like Twilio (its JSON is valid against Twilio's OpenAPI description), and can be told
  to fail: an HTTP status with a Twilio error code, a hang (a timeout for the client), or a hang
  after the message is stored (Twilio has it, the answer never arrives).
- Prism (`@stoplight/prism-cli`, pinned in package.json) in validation-proxy mode in front of the
  fake, with Twilio's own description of the Messages API from ../shared/twilio/: every request
  the project makes, and every answer, is checked against Twilio's published schema; a violation
  becomes an error the test sees. Where Node, Prism or the description is missing, the same
  tests talk to the fake directly.
- Webhook helpers: the exact fields Twilio posts (TWILIO.md 1a/1b), signed with the twilio
  SDK's own RequestValidator.

The SDK is never mocked: the project's worker talks to these over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "twilio" / "twilio_api_v2010.messages.json"
PRISM = ROOT / "node_modules" / ".bin" / "prism"

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
SECONDARY_TOKEN = "test-secondary-token-fedcba9876543210"
LINE_NUMBER = "+46101234500"
BASE_URL = "https://line.example.se"


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


# --- webhooks as Twilio sends them ---------------------------------------------------------------


def inbound_fields(
    *, sender: str, body: str, to: str = LINE_NUMBER, sid: str | None = None, num_media: int = 0
) -> dict[str, str]:
    """An incoming-message webhook's fields, in the order and with the (often empty) geo
    fields real Twilio requests carry (TWILIO.md 1a). Every one of them is signed."""
    sid = sid or new_sid("MM" if num_media else "SM")
    fields = {
        "ToCountry": "SE",
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(num_media),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "SE",
        "To": to,
        "ToZip": "",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    for n in range(num_media):
        fields[f"MediaContentType{n}"] = "image/jpeg"
        fields[f"MediaUrl{n}"] = (
            f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media/"
            f"ME{secrets.token_hex(16)}"
        )
    return fields


def status_fields(
    *, sid: str, status: str, to: str, error_code: str = "", from_: str = LINE_NUMBER
) -> dict[str, str]:
    """A status callback's fields (TWILIO.md 1b)."""
    fields: dict[str, str] = {}
    if error_code:
        fields["ErrorCode"] = error_code
    if status in ("delivered", "undelivered"):
        fields["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
    fields.update(
        {
            "SmsSid": sid,
            "SmsStatus": status,
            "MessageStatus": status,
            "To": to,
            "MessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": from_,
            "ApiVersion": "2010-04-01",
        }
    )
    return fields


def sign(url: str, fields: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, fields)


# --- the fake Messages API -----------------------------------------------------------------------


@dataclass
class Fault:
    """What the fake does to the next matching request instead of (or before) answering."""

    method: str  # "POST" (create) or "DELETE"
    status: int = 0  # answer with this HTTP status and `code`
    code: int = 0
    hang: float = 0.0  # sleep this long first (longer than the client's timeout: a timeout)
    store_first: bool = False  # with hang: the message is created before the hang


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, str]
    authorization: str


@dataclass
class FakeState:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Bumped by reset(): a request still hanging from an earlier test stores nothing after.
    generation: int = 0


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=False).replace("-0000", "+0000")


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeTwilio/1"
    state: FakeState

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no numbers in test output
        pass

    # -- helpers --
    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send_json(
            status,
            {
                "code": code,
                "message": message,
                "status": status,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
            },
        )

    def _take_fault(self, method: str) -> Fault | None:
        with self.state.lock:
            for index, fault in enumerate(self.state.faults):
                if fault.method == method:
                    return self.state.faults.pop(index)
        return None

    def _record(self, form: dict[str, str]) -> None:
        with self.state.lock:
            self.state.requests.append(
                Recorded(self.command, self.path, form, self.headers.get("Authorization", ""))
            )

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _sep, _password = base64.b64decode(auth[6:]).decode().partition(":")
        return user.startswith("AC")

    # -- the API --
    def do_POST(self) -> None:
        generation = self.state.generation
        form = self._form()
        self._record(form)
        if not self._authorized():
            return self._error(401, 20003, "Authenticate")
        if not self.path.split("?")[0].endswith("/Messages.json"):
            return self._error(404, 20404, "The requested resource was not found")
        fault = self._take_fault("POST")
        if fault and fault.hang and not fault.store_first:
            time.sleep(fault.hang)
            if generation != self.state.generation:
                return self._error(500, 20500, "Reset while hanging")
        if fault and fault.status:
            return self._error(fault.status, fault.code, "Injected failure")
        if "To" not in form or not ("From" in form or "MessagingServiceSid" in form):
            return self._error(400, 21604, "A 'To' and a 'From' phone number are required.")
        message = self._store(form)
        if fault and fault.hang and fault.store_first:
            time.sleep(fault.hang)
        self._send_json(201, message)

    def _store(self, form: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        sid = new_sid()
        account = self.path.split("/Accounts/")[1].split("/")[0]
        message = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": _rfc2822(now),
            "date_sent": None,
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if "MessagingServiceSid" in form else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"
            },
            "to": form.get("To"),
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        with self.state.lock:
            self.state.messages[sid] = {**message, "_status_callback": form.get("StatusCallback")}
        return message

    def do_GET(self) -> None:
        self._record({})
        if not self._authorized():
            return self._error(401, 20003, "Authenticate")
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path.endswith("/Messages.json"):
            with self.state.lock:
                found = [
                    {k: v for k, v in m.items() if not k.startswith("_")}
                    for m in reversed(list(self.state.messages.values()))
                    if "To" not in query or m["to"] == query["To"]
                ]
            size = int(query.get("PageSize", 50))
            url = "https://api.twilio.com" + parts.path
            return self._send_json(
                200,
                {
                    "end": max(0, min(size, len(found)) - 1),
                    "first_page_uri": url,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": size,
                    "previous_page_uri": None,
                    "start": 0,
                    "uri": url,
                    "messages": found[:size],
                },
            )
        sid = parts.path.rsplit("/", 1)[-1].removesuffix(".json")
        with self.state.lock:
            message = self.state.messages.get(sid)
        if message is None:
            return self._error(404, 20404, "The requested resource was not found")
        self._send_json(200, {k: v for k, v in message.items() if not k.startswith("_")})

    def do_DELETE(self) -> None:
        self._record({})
        if not self._authorized():
            return self._error(401, 20003, "Authenticate")
        sid = self.path.rsplit("/", 1)[-1].removesuffix(".json")
        fault = self._take_fault("DELETE")
        if fault and fault.hang:
            time.sleep(fault.hang)
        if fault and fault.status:
            return self._error(fault.status, fault.code, "Injected failure")
        with self.state.lock:
            if sid not in self.state.messages and sid in self.state.deleted:
                return self._error(404, 20404, "The requested resource was not found")
            self.state.messages.pop(sid, None)
            self.state.deleted.append(sid)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up waiting (an injected hang) leaves a broken pipe: expected.
        pass


class FakeTwilio:
    """The fake on a free port of 127.0.0.1; `url` is its base URL."""

    def __init__(self) -> None:
        self.state = FakeState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeTwilio:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- for tests --
    def fail_next(self, method: str = "POST", **kwargs: Any) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(method=method, **kwargs))

    def reset(self) -> None:
        with self.state.lock:
            self.state.generation += 1
            self.state.messages.clear()
            self.state.requests.clear()
            self.state.faults.clear()
            self.state.deleted.clear()

    def created(self) -> list[dict[str, Any]]:
        """The messages Twilio has (not deleted), oldest first."""
        with self.state.lock:
            return list(self.state.messages.values())

    def creates(self) -> list[Recorded]:
        with self.state.lock:
            return [r for r in self.state.requests if r.method == "POST"]

    def deletes(self) -> list[Recorded]:
        with self.state.lock:
            return [r for r in self.state.requests if r.method == "DELETE"]


# --- Prism ---------------------------------------------------------------------------------------


def prism_available() -> bool:
    return SPEC.is_file() and PRISM.exists() and shutil.which("node") is not None


@contextmanager
def prism_proxy(upstream: str, timeout: float = 60) -> Iterator[str]:
    """Prism in validation-proxy mode in front of `upstream`; yields its URL."""
    from tests.live import free_port

    port = free_port()
    process = subprocess.Popen(
        [str(PRISM), "proxy", "--errors", "-h", "127.0.0.1", "-p", str(port), str(SPEC), upstream],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Prism is listening" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(timeout):
            raise RuntimeError("Prism did not start:\n" + "".join(lines[-20:]))
        yield f"http://127.0.0.1:{port}"
    finally:
        with suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


# --- fixtures ------------------------------------------------------------------------------------


@dataclass
class TwilioApi:
    """What the project's SDK client talks to in a test: `url` (Prism in front of the fake, or
    the fake itself) and the fake behind it, which records and can fail."""

    url: str
    fake: FakeTwilio
    through_prism: bool


@pytest.fixture(scope="session")
def _fake_twilio_server() -> Iterator[FakeTwilio]:
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _twilio_api_server(_fake_twilio_server: FakeTwilio) -> Iterator[TwilioApi]:
    if prism_available():
        with prism_proxy(_fake_twilio_server.url) as url:
            yield TwilioApi(url, _fake_twilio_server, through_prism=True)
    elif os.environ.get("CI") == "true" and (ROOT / "package-lock.json").exists():
        pytest.fail("Prism is pinned in package-lock.json but not installed (npm ci)")
    else:
        yield TwilioApi(_fake_twilio_server.url, _fake_twilio_server, through_prism=False)


def configure(settings: Any, api_url: str) -> None:
    """The SMS channel on, with the SDK's requests going to `api_url`."""
    from sms import inbound, provider, replies

    settings.SMS_ENABLED = True
    settings.TWILIO_ACCOUNT_SID = ACCOUNT_SID
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.TWILIO_AUTH_TOKEN_SECONDARY = ""
    settings.TWILIO_WEBHOOK_BASE_URL = BASE_URL
    settings.TWILIO_FROM_NUMBER = LINE_NUMBER
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.TWILIO_DELETE_MESSAGES = True
    settings.TWILIO_API_BASE_URL = api_url
    settings.TWILIO_HTTP_TIMEOUT_SECONDS = 5
    inbound.forget_lines()
    replies.clear_cache()
    provider._clients.clear()


@pytest.fixture
def twilio_api(_twilio_api_server: TwilioApi, settings: Any) -> Iterator[TwilioApi]:
    """The SMS channel configured against Prism (or the fake), with a clean fake."""
    _twilio_api_server.fake.reset()
    configure(settings, _twilio_api_server.url)
    yield _twilio_api_server
    _twilio_api_server.fake.reset()


@pytest.fixture
def fake_twilio(_fake_twilio_server: FakeTwilio, settings: Any) -> Iterator[FakeTwilio]:
    """The SMS channel configured against the fake directly (failure injection)."""
    _fake_twilio_server.reset()
    configure(settings, _fake_twilio_server.url)
    yield _fake_twilio_server
    _fake_twilio_server.reset()


@pytest.fixture
def sms_on(settings: Any) -> None:
    """The SMS channel on, for webhook tests that never reach the API."""
    configure(settings, "http://127.0.0.1:9")


# --- posting webhooks to the app ------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def post_signed(
    client: Any,
    path: str,
    fields: dict[str, str],
    *,
    url: str | None = None,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    **extra: Any,
) -> Any:
    """POST `fields` form-encoded to `path` with the Django test client (sync or async), signed
    for `url` (default: the configured public base URL + path) as Twilio would."""
    from urllib.parse import urlencode

    signature = sign(url or BASE_URL + path, fields, token) if signature is None else signature
    headers = {"X-Twilio-Signature": signature} if signature else {}
    headers.update(extra.pop("headers", {}))
    return client.post(path, urlencode(fields), content_type=FORM, headers=headers, **extra)
