"""How the server process collects garbage, through the `gc` module's public calls only (made
once when the ASGI application is loaded, asgi.py).

Everything loaded at start (Django, the models, Twisted, the URL patterns: hundreds of thousands
of objects that live as long as the process) is moved out of the collector's way with
`gc.freeze()`, once the application is loaded: otherwise each full collection walks all of them
and stops the server for tens of milliseconds. And the old generation is collected a tenth as
often as CPython's default (GC_THRESHOLDS): with a few thousand sockets open, a full collection
walks all their objects and holds the event loop for a long while. Reference counting still
frees what is no longer used at once; only garbage in reference cycles that has lived long
enough to reach the old generation waits longer.
"""

from __future__ import annotations

import gc

# The collector's thresholds (young, middle, old): CPython's defaults but for the old
# generation, collected after every hundred middle collections instead of every ten.
GC_THRESHOLDS = (700, 10, 100)


def collect_old_objects_less_often() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
