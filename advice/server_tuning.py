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

And one change to how the process collects garbage: everything loaded at start (Django, the
models, Twisted, the URL patterns: hundreds of thousands of objects that live as long as the
process) is moved out of the collector's way with `gc.freeze()`, once the application is
loaded. Before, each full collection walked all of them and stopped the server for 80-100 ms,
which was most of the webhooks' p99 (docs/sms.md, "Benchmark").
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


def apply() -> None:
    skip_twisted_form_parsing()
    skip_twisted_access_log()
    skip_autobahn_log_formatting()


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
