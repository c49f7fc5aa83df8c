"""GET /health/: the database and Redis asked for real; a dead Redis is named."""

from __future__ import annotations

import socket

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


def a_port_nobody_listens_on() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_answers_ok_when_the_database_and_redis_answer(settings):
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok" if settings.REDIS_URL else "not used",
    }
    assert "no-store" in response["Cache-Control"]
    assert Client().head("/health/").status_code == 200


def test_health_names_redis_when_it_does_not_answer(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{a_port_nobody_listens_on()}/0"
    response = Client().get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "failing", "database": "ok", "redis": "failing"}
    assert "127.0.0.1" not in response.content.decode()
