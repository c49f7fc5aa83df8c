"""Work that Daphne's libraries do for every request or frame and that this service never uses,
switched off (measured in docs/performance.md).

Each change is to a library under Daphne, made once when the ASGI application is loaded
(asgi.py), and does nothing where that library is not there:

- Twisted parses every form-encoded POST body into `request.args`, and the Content-Type header
  through the `email` package, before Daphne hands the raw body to the application. Daphne
  never reads `args`; Twisted's own switch for it (`parsePOSTFormSubmission`) is turned off.
  For Twilio's webhooks (form-encoded POSTs) that parsing was a third of the server's CPU.
- Twisted formats an access-log line in the "combined" format, with the client's address, for
  every request and writes it to its own log. Nothing here reads that log, and no client's
  address should be formatted at all (rule 1 of the project); Daphne's own access log, off
  unless asked for, is not this one. The line is no longer made.
- autobahn formats the arguments of its debug log lines whether or not debug logging is on: it
  pretty-prints its whole configuration for every new WebSocket (`pformat`) and highlights
  names and values for every frame it sends (`hltype`, `hlval`). In autobahn's protocol module
  those three only ever build log arguments; they now hand the value over as it is. In a surge
  of arrivals that formatting was a seventh of the server's CPU.

- Twisted's TCP transport never writes when asked to: it buffers the bytes, registers the
  socket for writing with the event loop (an `epoll_ctl`), and sends on the loop's next turn,
  then unregisters it (another). For a server that sends each socket a small frame now and
  then, that is three system calls and a turn of the loop per frame; a surge's place updates
  to thousands of waiting visitors were mostly that. A write to a connection with nothing
  already waiting to go out is now sent at once; what the kernel does not take (a client
  that reads slowly) is buffered and sent the usual way, and a connection found broken is
  left to the usual way to report. Order is kept: nothing is sent at once while anything
  older waits.

And two changes to how the process collects garbage. Everything loaded at start (Django, the
models, Twisted, the URL patterns: hundreds of thousands of objects that live as long as the
process) is moved out of the collector's way with `gc.freeze()`, once the application is
loaded. Before, each full collection walked all of them and stopped the server for 80-100 ms,
which was most of the webhooks' p99 (docs/sms.md, "Benchmark"). And the old generation is
collected a tenth as often as CPython's default (GC_THRESHOLDS): with a few thousand sockets
open, a full collection walks all their objects and holds the event loop for 100-250 ms, and
in a surge of arrivals (a growing heap) one came every few seconds; every stall of the event
loop longer than 25 ms in the surge was one of them (docs/performance.md, "Fourth round").
Reference counting still frees what is no longer used at once; only garbage in reference
cycles that has lived long enough to reach the old generation waits longer.
"""

from __future__ import annotations

import gc
from typing import Any


def _as_it_is(value: Any, *_args: Any, **_kwargs: Any) -> Any:
    return value


def skip_twisted_form_parsing() -> None:
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by something other than Daphne
        return
    if getattr(WebRequest, "_advice_form_parsing_off", False):
        return
    daphne_init = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        daphne_init(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__
    WebRequest._advice_form_parsing_off = True


def skip_twisted_access_log() -> None:
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:
        return

    def log(self: Any, request: Any) -> None:
        return None

    HTTPFactory.log = log


def skip_autobahn_log_formatting() -> None:
    try:
        import autobahn.websocket.protocol as autobahn_protocol
    except ImportError:
        return
    for name in ("pformat", "hltype", "hlval"):
        if hasattr(autobahn_protocol, name):
            setattr(autobahn_protocol, name, _as_it_is)


def write_at_once_when_nothing_waits() -> None:
    try:
        from twisted.internet import tcp
    except ImportError:
        return
    if getattr(tcp.Connection, "_advice_writes_at_once", False):
        return
    buffered_write = tcp.Connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            self.TLS
            or not self.connected
            or self._writeDisconnected
            or self._tempDataLen
            or len(self.dataBuffer) > self.offset
            or not isinstance(data, bytes)
        ):
            return buffered_write(self, data)
        sent = self.writeSomeData(data)
        if not isinstance(sent, int) or sent < 0:
            # Broken: buffered, the next turn's doWrite finds it and closes the connection.
            return buffered_write(self, data)
        if sent < len(data):
            buffered_write(self, data[sent:])
        return None

    tcp.Connection.write = write
    tcp.Connection._advice_writes_at_once = True


# The collector's thresholds (young, middle, old): CPython's defaults but for the old
# generation, collected after every hundred middle collections instead of every ten.
GC_THRESHOLDS = (700, 10, 100)


def collect_old_objects_less_often() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def apply() -> None:
    skip_twisted_form_parsing()
    skip_twisted_access_log()
    skip_autobahn_log_formatting()
    write_at_once_when_nothing_waits()
    collect_old_objects_less_often()


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
