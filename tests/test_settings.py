"""Configuration from the environment: a bad value stops the start with a message naming the
variable; the URLs select the production stack; production settings pass `check --deploy`.

Each case runs `manage.py` in a fresh process with exactly the environment under test, since
settings are read once, at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent

# Everything the settings read, so the parent's environment cannot leak into a case.
SETTINGS_VARIABLES = {
    "DEBUG",
    "HTTPS",
    "SECRET_KEY",
    "ENCRYPTION_KEYS",
    "ALLOWED_HOSTS",
    "PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "CHANNEL_PREFIX",
    "SQLITE_PATH",
    "DJANGO_SETTINGS_MODULE",
    "LOG_LEVEL",
    "DATABASE_POOL_MIN",
    "DATABASE_POOL_MAX",
    "SOCKET_IDLE_SECONDS",
    "STATIC_ROOT",
}
PRODUCTION = {
    "DEBUG": "false",
    "HTTPS": "true",
    "SECRET_KEY": "k" * 20 + "-production-only-Zq8#mW2!xR5%vT9&nB4*" + "p" * 10,
    "ALLOWED_HOSTS": "chat.example.se",
    "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}


def clean_environment(**variables: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTINGS_VARIABLES and not k.endswith("_FILE")
    }
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(variables)
    return env


def manage(*args: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_in(*names: str, **variables: str) -> dict:
    """The named settings as a fresh process sees them with `variables`."""
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refusal(result: subprocess.CompletedProcess) -> str:
    """The last line of the traceback: the ImproperlyConfigured message."""
    assert result.returncode != 0, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: "), result.stderr
    return last.removeprefix("django.core.exceptions.ImproperlyConfigured: ")


BAD_VALUES = [
    ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
    ({"HTTPS": "sometimes"}, "HTTPS='sometimes' is not a boolean"),
    ({"PORT": "eighty"}, "PORT='eighty' is not a whole number"),
    ({"PORT": "0"}, "PORT='0' must be at least 1"),
    ({"SOCKET_IDLE_SECONDS": "5"}, "SOCKET_IDLE_SECONDS='5' must be at least 10"),
    (
        {"DATABASE_URL": "postgres://db/advice", "DATABASE_POOL_MAX": "lots"},
        "DATABASE_POOL_MAX='lots' is not a whole number",
    ),
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a database URL"),
    ({"DATABASE_URL": "postgres://u@h:port/db"}, "DATABASE_URL is not a database URL"),
    ({"DATABASE_URL": "mysql://user:hunter2@db/advice"}, "DATABASE_URL must be a postgres:// URL"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL='http://127.0.0.1:6379' must start with"),
    ({"ENCRYPTION_KEYS": "not-a-fernet-key"}, "ENCRYPTION_KEYS: key number 1 is not a Fernet key"),
    ({"SECRET_KEY_FILE": "/nonexistent/secret"}, "SECRET_KEY_FILE='/nonexistent/secret' cannot"),
]


@pytest.mark.parametrize(
    ("variables", "message"), BAD_VALUES, ids=[list(v)[-1] for v, _m in BAD_VALUES]
)
def test_a_bad_value_stops_the_start_with_a_message_naming_the_variable(variables, message):
    result = manage("check", **{"DEBUG": "true", **variables})
    assert refusal(result).startswith(message)


def test_a_refusal_never_prints_a_secret():
    key = "c2VjcmV0LWJ1dC1icm9rZW4="
    keys = f"{Fernet.generate_key().decode()},{key}"
    result = manage("check", DEBUG="true", ENCRYPTION_KEYS=keys)
    assert refusal(result).startswith("ENCRYPTION_KEYS: key number 2")
    assert key not in result.stderr
    result = manage("check", DEBUG="true", DATABASE_URL="mysql://user:hunter2@db/advice")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("missing", "message"),
    [("SECRET_KEY", "SECRET_KEY must be set"), ("ENCRYPTION_KEYS", "ENCRYPTION_KEYS must be set")],
)
def test_production_without_its_secrets_does_not_start(missing, message):
    variables = {k: v for k, v in PRODUCTION.items() if k != missing}
    assert refusal(manage("check", **variables)).startswith(message)


def test_a_wildcard_in_allowed_hosts_does_not_start_with_debug_off():
    # The WebSocket origin check is built on ALLOWED_HOSTS: "*" would let any site in (C-2).
    result = manage("check", **{**PRODUCTION, "ALLOWED_HOSTS": "chat.example.se,*"})
    assert refusal(result) == "ALLOWED_HOSTS must not contain '*'"


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "s" * 50 + "\n")
    seen = settings_in(
        "SECRET_KEY",
        **{**PRODUCTION, "SECRET_KEY": "", "SECRET_KEY_FILE": str(secret)},
    )
    assert seen["SECRET_KEY"] == "from-a-file-" + "s" * 50


def test_with_only_debug_set_the_service_runs_embedded_on_sqlite_and_the_in_memory_layer():
    seen = settings_in("DATABASES", "CHANNEL_LAYERS", "DEBUG", DEBUG="true")
    assert seen["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert seen["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_database_url_selects_postgresql_with_a_connection_pool():
    seen = settings_in(
        "DATABASES",
        DEBUG="true",
        DATABASE_URL="postgres://advice:pw@db.internal:5433/advice",
        DATABASE_POOL_MAX="40",
    )
    database = seen["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("db.internal", 5433, "advice")
    assert database["OPTIONS"]["pool"]["max_size"] == 40
    # psycopg's pool replaces persistent connections; Django refuses both at once.
    assert database["CONN_MAX_AGE"] == 0


def test_redis_url_selects_the_redis_pubsub_channel_layer():
    seen = settings_in(
        "CHANNEL_LAYERS",
        DEBUG="true",
        REDIS_URL="redis://cache.internal:6379/2",
        CHANNEL_PREFIX="advice-prod",
    )
    layer = seen["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert layer["CONFIG"]["hosts"] == [{"address": "redis://cache.internal:6379/2"}]
    assert layer["CONFIG"]["prefix"] == "advice-prod"


def test_production_settings_pass_the_deploy_check_without_a_single_warning():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **PRODUCTION,
        DATABASE_URL="postgres://advice@127.0.0.1:5432/advice",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNING" not in result.stderr


def test_production_settings_are_strict():
    seen = settings_in(
        "DEBUG",
        "ALLOWED_HOSTS",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_NAME",
        "SECURE_HSTS_SECONDS",
        "SECURE_SSL_REDIRECT",
        **PRODUCTION,
    )
    assert seen == {
        "DEBUG": False,
        "ALLOWED_HOSTS": ["chat.example.se"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_NAME": "__Host-session",
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_SSL_REDIRECT": True,
    }
