"""Filters for the log lines Django writes itself."""

from __future__ import annotations

import logging


def not_a_quick_exit(record: logging.LogRecord) -> bool:
    """Drops django.request's line about the quick-exit beacon. Its 404 is the usual second half
    of a quick exit (the page's frame has ended the conversation already), and a line per exit
    would record when a visitor fled."""
    from django.urls import reverse

    request = getattr(record, "request", None)
    return getattr(request, "path", None) != reverse("exit")
