"""The Twilio settings: off when unset, and a half-set or malformed one stops the start with a
message that names the variable."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from sms.config import twilio_from_environment

GOOD = {
    "TWILIO_ACCOUNT_SID": "AC" + "0a" * 16,
    "TWILIO_AUTH_TOKEN": "secret",
    "TWILIO_WEBHOOK_BASE_URL": "https://chat.example.se",
    "TWILIO_FROM_NUMBER": "+46101234500",
}
ALL = [
    *GOOD,
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_API_BASE_URL",
    "TWILIO_AUTH_TOKEN_SECONDARY",
    "TWILIO_DELETE_MESSAGES",
    "TWILIO_HTTP_TIMEOUT_SECONDS",
]


@pytest.fixture
def env(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_with_nothing_set_the_sms_channel_is_off(env):
    settings = twilio_from_environment()
    assert not settings.enabled


def test_a_complete_configuration_switches_it_on_with_deletion_at_twilio_by_default(env):
    env(**GOOD)
    settings = twilio_from_environment()
    assert settings.enabled
    assert settings.delete_messages is True
    assert settings.webhook_base_url == "https://chat.example.se"


def test_a_messaging_service_may_replace_the_from_number(env):
    env(**{**GOOD, "TWILIO_FROM_NUMBER": "", "TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32})
    assert twilio_from_environment().messaging_service_sid == "MG" + "1" * 32


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": ""}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_WEBHOOK_BASE_URL": ""}, "TWILIO_WEBHOOK_BASE_URL"),
        ({"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_FROM_NUMBER": ""}, "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"),
        ({"TWILIO_FROM_NUMBER": "0101234500"}, "TWILIO_FROM_NUMBER"),
        ({"TWILIO_MESSAGING_SERVICE_SID": "MG12"}, "TWILIO_MESSAGING_SERVICE_SID"),
        ({"TWILIO_WEBHOOK_BASE_URL": "chat.example.se"}, "TWILIO_WEBHOOK_BASE_URL"),
        ({"TWILIO_WEBHOOK_BASE_URL": "http://chat.example.se"}, "must use https"),
        ({"TWILIO_WEBHOOK_BASE_URL": "https://chat.example.se/sms"}, "without a path"),
        ({"TWILIO_API_BASE_URL": "https://api.example.com"}, "TWILIO_API_BASE_URL"),
        ({"TWILIO_DELETE_MESSAGES": "perhaps"}, "TWILIO_DELETE_MESSAGES"),
        ({"TWILIO_HTTP_TIMEOUT_SECONDS": "0"}, "TWILIO_HTTP_TIMEOUT_SECONDS"),
    ],
)
def test_a_half_set_or_malformed_configuration_fails_loudly(env, change, named):
    env(**{**GOOD, **change})
    with pytest.raises(ImproperlyConfigured, match=named):
        twilio_from_environment()


def test_the_local_api_base_url_is_for_loopback_only(env):
    env(**GOOD, TWILIO_API_BASE_URL="http://127.0.0.1:4010")
    assert twilio_from_environment().api_base_url == "http://127.0.0.1:4010"
