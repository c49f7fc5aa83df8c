"""Which language a page is served in: the visitor's from the URL prefix (/ is Swedish, /en/,
/ar/ ...), carried into the conversation; the advisor side Swedish or English only, whatever the
browser asks for."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import translation

from advice.models import Conversation
from tests.factories import START, receive_until, visitor_socket

VISITOR_LANGUAGES = [code for code, _name in settings.LANGUAGES]
RIGHT_TO_LEFT = {"ar", "fa", "ckb"}


def html_attributes(response) -> dict[str, str]:
    """The attributes of the page's <html> element."""
    tag = re.search(r"<html\b([^>]*)>", response.content.decode())
    assert tag, "the page has no <html> element"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


def start_page_url(code: str) -> str:
    return "/" if code == settings.LANGUAGE_CODE else f"/{code}/"


def test_the_seven_visitor_languages_are_configured_with_swedish_first():
    assert VISITOR_LANGUAGES == ["sv", "en", "ar", "fa", "so", "ti", "ckb"]
    assert settings.LANGUAGE_CODE == "sv"


@pytest.mark.parametrize("code", VISITOR_LANGUAGES)
def test_django_knows_each_language_its_direction_and_its_own_name(code):
    info = translation.get_language_info(code)
    assert info["bidi"] is (code in RIGHT_TO_LEFT)
    assert info["name_local"]
    with translation.override(code):
        assert translation.get_language_bidi() is (code in RIGHT_TO_LEFT)


@pytest.mark.django_db
@pytest.mark.parametrize("code", VISITOR_LANGUAGES)
def test_each_visitor_language_has_its_own_start_page_with_lang_and_direction(client, code):
    response = client.get(start_page_url(code))
    assert response.status_code == 200
    assert response["Content-Language"] == code
    attributes = html_attributes(response)
    assert attributes.get("lang") == code
    assert attributes.get("dir") == ("rtl" if code in RIGHT_TO_LEFT else "ltr")


@pytest.mark.django_db
def test_the_browser_language_never_changes_the_visitors_page(client):
    """The URL alone decides: no redirect, and Swedish at / even for an Arabic browser."""
    response = client.get("/", HTTP_ACCEPT_LANGUAGE="ar, en;q=0.8")
    assert response.status_code == 200
    assert response["Content-Language"] == "sv"
    assert html_attributes(response)["lang"] == "sv"


@pytest.mark.django_db
@pytest.mark.parametrize("code", VISITOR_LANGUAGES)
def test_choosing_a_language_leaves_no_language_cookie(client, code):
    response = client.get(start_page_url(code))
    assert settings.LANGUAGE_COOKIE_NAME not in response.cookies
    assert all(morsel.value != code for morsel in response.cookies.values())


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/advisor/login/", "/admin/login/"])
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", "sv"),
        ("en-GB,en;q=0.9", "en"),
        ("sv-SE", "sv"),
        ("ar", "sv"),
        ("fa, ckb;q=0.9, so;q=0.8, ti;q=0.7", "sv"),
        ("ar, en;q=0.5", "en"),
    ],
)
def test_advisor_pages_speak_only_swedish_or_english(client, path, accept, expected):
    response = client.get(path, HTTP_ACCEPT_LANGUAGE=accept, follow=True)
    assert response["Content-Language"] == expected


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["ar", "en", "ti"])
def test_advisor_pages_have_no_language_prefixed_address(client, code):
    assert client.get(f"/{code}/advisor/login/").status_code == 404


# --- the conversation's language --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", VISITOR_LANGUAGES)
async def test_the_visitors_language_becomes_the_conversations_language(code):
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, "language": code})
    await receive_until(visitor, "started")
    languages = await database_sync_to_async(
        lambda: list(Conversation.objects.values_list("language", flat=True))
    )()
    assert languages == [code]
    await visitor.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", ["de", "prs", "AR", "", "ar-x-anything"])
async def test_a_language_the_visitor_side_does_not_speak_is_refused_and_starts_nothing(code):
    visitor = await visitor_socket()
    await visitor.send_json_to({**START, "language": code})
    error = await receive_until(visitor, "error")
    assert error["code"] == "invalid_field"
    assert await database_sync_to_async(Conversation.objects.count)() == 0
    await visitor.disconnect()
