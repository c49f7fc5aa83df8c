"""Twilio's webhooks as Django views (sms.webhooks does the work). They are the only
CSRF-exempt views in the project: Twilio cannot carry a CSRF token, and its signature is
checked instead, against the configured public URL.

The views are async: on PostgreSQL a text arriving is stored by one statement on
advice.store's connections, without a thread (sms.webhooks.handle_inbound_without_thread);
everything else (status callbacks, SQLite, the admin's settings not cached yet) is answered
on the request's thread."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from sms.webhooks import Answer, Webhook, handle, handle_inbound_without_thread


def _webhook(request: HttpRequest) -> Webhook | Answer:
    try:
        body = request.body
    except RequestDataTooBig:
        return Answer(413, b"request_too_large\n")
    return Webhook(
        method=request.method or "",
        path=request.path,
        query_string=request.META.get("QUERY_STRING", ""),
        content_type=request.content_type or "",
        body=body,
        signature=request.headers.get("X-Twilio-Signature", ""),
    )


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


async def _answer(request: HttpRequest) -> HttpResponse:
    hook = _webhook(request)
    if isinstance(hook, Answer):
        return _response(hook)
    # Only when served over ASGI: elsewhere (the test client, a WSGI server) each request runs
    # on an event loop of its own, whose connections would be opened for it alone and would
    # not see the caller's transaction.
    answer = await handle_inbound_without_thread(hook) if isinstance(request, ASGIRequest) else None
    if answer is None:
        # Under Daphne each request has a thread of its own for this (Django's
        # ThreadSensitiveContext), so webhooks still overlap their round trips.
        answer = await sync_to_async(handle)(hook)
    return _response(answer)


@csrf_exempt
async def inbound(request: HttpRequest) -> HttpResponse:
    return await _answer(request)


@csrf_exempt
async def status(request: HttpRequest) -> HttpResponse:
    return await _answer(request)
