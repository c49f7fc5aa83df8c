"""Shared fixtures. Tests talk to the real things: the database the run is configured for
(PostgreSQL in `make test`), the real channel layer, the real middleware stack."""

import pytest

from tests.factories import make_advisor

# The local Twilio stand-ins and the SMS channel's fixtures (twilio_api, fake_twilio, sms_on).
pytest_plugins = ["tests.twilio_peer"]


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_cached_line_status():
    """Each test starts without the line statuses an earlier test left in this process."""
    from advice import hours

    hours.clear_line_status_cache()
    yield
    hours.clear_line_status_cache()


@pytest.fixture
def advisor(db):
    return make_advisor("alice")


@pytest.fixture
def other_advisor(db):
    return make_advisor("bob")


@pytest.fixture
def daphne_server(transactional_db):
    """A real Daphne process serving the app on a free port, on this test's database."""
    from tests.live import daphne

    with daphne() as server:
        yield server
