"""Twilio's webhooks as Django views (sms.webhooks does the work). They are the only
CSRF-exempt views in the project: Twilio cannot carry a CSRF token, and its signature is
checked instead, against the configured public URL.

Under Daphne the ASGI fast path (sms.asgi) answers these two paths before Django sees them;
the views serve everywhere else (the test client, a WSGI server) with the same answers."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from sms.webhooks import Answer, Webhook, handle


def _webhook(request: HttpRequest) -> Webhook:
    return Webhook(
        method=request.method or "",
        path=request.path,
        query_string=request.META.get("QUERY_STRING", ""),
        content_type=request.content_type or "",
        body=request.body,
        signature=request.headers.get("X-Twilio-Signature", ""),
    )


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


@csrf_exempt
def inbound(request: HttpRequest) -> HttpResponse:
    return _response(handle(_webhook(request)))


@csrf_exempt
def status(request: HttpRequest) -> HttpResponse:
    return _response(handle(_webhook(request)))
