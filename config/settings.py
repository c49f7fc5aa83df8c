"""Settings for the advice line.

Everything an operator sets comes from the environment (see README, "Configuration"). With nothing
set the service runs embedded: SQLite and the in-memory channel layer, so `make run` works on a
fresh machine. `DATABASE_URL` selects PostgreSQL and `REDIS_URL` the Redis channel layer.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet as _Fernet
from django.conf.locale import LANG_INFO as _django_lang_info
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from config.env import env_bool, env_int, env_list, env_str
from config.logs import not_a_quick_exit
from sms.config import twilio_from_environment


def gettext_noop(message: str) -> str:
    """Marks a string for translation (makemessages finds it by this name) without Django's
    translation machinery, which reads settings and would load them half-made from here."""
    return message


BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# HTTPS=true when the service is reached over TLS (always, in production): secure cookies with
# the __Host- prefix, HSTS, and the redirect from http.
HTTPS = env_bool("HTTPS", False)

# Development keys are accepted only with DEBUG on; production must set its own.
_DEV_SECRET_KEY = "dev-only-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY") or (_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set (DEBUG is off)")

# Fernet keys for encryption at rest, comma-separated, newest first. The first encrypts; every
# key decrypts, so a key is rotated by putting a new one in front and running `manage.py
# rotate_keys` before the old one is dropped.
ENCRYPTION_KEYS = env_list("ENCRYPTION_KEYS") or (
    ["ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM="] if DEBUG else []
)
if not ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "ENCRYPTION_KEYS must be set (DEBUG is off); make one with `python -c "
        "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
    )
for _number, _key in enumerate(ENCRYPTION_KEYS, start=1):
    # Checked now, not at the first message: a bad key must stop the start. (The message
    # names the key's place in the list, never the key.)
    try:
        _Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            f"ENCRYPTION_KEYS: key number {_number} is not a Fernet key (32 url-safe base64 bytes)"
        ) from None

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
if not DEBUG and "*" in ALLOWED_HOSTS:
    # The WebSocket origin check is built on ALLOWED_HOSTS; "*" would accept any origin.
    raise ImproperlyConfigured("ALLOWED_HOSTS must not contain '*'")
# Origins beyond the service's own (config/origins.py), e.g. "https://chat.example.se:8443"
# behind a proxy that does not pass on the Host the browser used: trusted by the WebSocket
# origin check and by Django's CSRF check alike.
TRUSTED_ORIGINS = [origin.lower().rstrip("/") for origin in env_list("TRUSTED_ORIGINS", [])]
CSRF_TRUSTED_ORIGINS = list(TRUSTED_ORIGINS)

PORT = env_int("PORT", 8000, minimum=1)

INSTALLED_APPS = [
    "daphne",  # first, so its runserver serves ASGI (daphne.E001)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "channels",
    "config",
    "advice",
    "console",
    "chat",
    "sms",
    "interpreter",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.language.LanguageMiddleware",  # Django's, kept to sv/en on advisor pages
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # after AuthenticationMiddleware (O-1)
    "console.middleware.AdvisorSessionMiddleware",  # idle and absolute session limits (O-9)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.NoStoreMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.service",
            ],
        },
    },
]

# Database: SQLite by default, PostgreSQL (psycopg 3, pooled) from DATABASE_URL.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        _db = dj_database_url.parse(DATABASE_URL)
    except ValueError as e:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {e}") from e
    if _db["ENGINE"] != "django.db.backends.postgresql":
        # Only PostgreSQL is supported behind DATABASE_URL (SQLite is the default without it);
        # the scheme alone is named: the URL may hold a password.
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a postgres:// URL, not {DATABASE_URL.split(':', 1)[0]}://"
        )
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # psycopg's pool replaces persistent connections (CONN_MAX_AGE must stay 0 with it).
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN", 2, minimum=0),
            "max_size": env_int("DATABASE_POOL_MAX", 20, minimum=1),
            "timeout": 10,
        }
    _db.setdefault("TEST", {})["NAME"] = f"test_{_db.get('NAME') or 'advice'}"
    DATABASES = {"default": _db}
else:
    _sqlite_path = env_str("SQLITE_PATH") or str(BASE_DIR / "db.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_path,
            # An on-disk test database, so that tests across threads and processes share it.
            "TEST": {"NAME": _sqlite_path.removesuffix(".sqlite3") + "-test.sqlite3"},
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: the doorbell between processes. The database is the source of truth; a lost
# doorbell is repaired by the client resuming from its last sequence number.
REDIS_URL = env_str("REDIS_URL")
# Processes of one service share a prefix; services (or test runs) sharing a Redis must not
# (Redis pub/sub channels are not scoped by database number).
CHANNEL_PREFIX = env_str("CHANNEL_PREFIX", "advice")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://")
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer: one connection per process instead of one per group.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL}],
                "prefix": CHANNEL_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "advisor-login"
LOGIN_REDIRECT_URL = "advisor-console"
OTP_LOGIN_URL = "advisor-login"
OTP_TOTP_ISSUER = env_str("OTP_ISSUER", "Rådgivningslinjen")
# The admin never shows a TOTP secret (or its QR code) once a device exists.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Internationalisation. The visitor side speaks the visitor's language; the advisor side
# Swedish or English.
LANGUAGE_CODE = "sv"
# Each language in its own name, as a visitor looking for it would recognise it. Dari readers
# are served by "fa": Dari and Farsi share one written standard and the text is kept to plain
# Persian both understand; the spoken differences matter for interpreters, so "prs" stays a
# separate choice in advice.choices.INTERPRETER_LANGUAGES.
LANGUAGES = [
    ("sv", "Svenska"),
    ("en", "English"),
    ("ar", "العربية"),
    ("fa", "فارسی / دری"),
    ("so", "Soomaali"),
    ("ti", "ትግርኛ"),
    ("ckb", "کوردی (سۆرانی)"),
]
LANGUAGES_BIDI = ["ar", "fa", "ckb"]
# Django knows no Somali or Tigrinya; {% get_language_info %} and friends need them described.
# (Mutated in place: django.utils.translation reads this very dict. The English names are
# marked for translation: the advisor's console shows them in Swedish.)
_django_lang_info.update(
    {
        "so": {
            "bidi": False,
            "code": "so",
            "name": gettext_noop("Somali"),
            "name_local": "Soomaali",
        },
        "ti": {"bidi": False, "code": "ti", "name": gettext_noop("Tigrinya"), "name_local": "ትግርኛ"},
        "fa": {**_django_lang_info["fa"], "name_local": "فارسی / دری"},
        "ckb": {**_django_lang_info["ckb"], "name_local": "کوردی (سۆرانی)"},
    }
)
# The advisor side (and the admin) speaks only these; config.language.LanguageMiddleware keeps
# a visitor language from ever reaching it.
ADVISOR_LANGUAGES = ["sv", "en"]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "Europe/Stockholm"
USE_TZ = True
# The language is chosen in the URL; a cookie would be a trace on the device.
LANGUAGE_COOKIE_AGE = None

STATIC_URL = "/static/"
STATIC_ROOT = env_str("STATIC_ROOT") or str(BASE_DIR / "staticfiles")
# Daphne serves /static/ itself unless a proxy in front does (deploy/nginx).
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# Sessions exist only for advisors. A visitor gets one cookie at most: the CSRF cookie, which
# lives only as long as the browser session (no Expires, no Max-Age: H-4) and is cleared at quick
# exit (Clear-Site-Data). The quick-exit beacon needs it: the Twilio webhooks are the only
# csrf_exempt views. Keeping the CSRF secret in a cookie rather than in the session
# (CSRF_USE_SESSIONS) spares every visitor a session row on the server; advisors are protected
# exactly as before (a token in every form, checked against the cookie, plus Django's Origin check).
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# An advisor session lasts at most ADVISOR_SESSION_HOURS from the password step, and ends after
# ADVISOR_IDLE_MINUTES without activity (a page request, or an action on the console's socket;
# not the socket's heartbeat). Both are enforced by console.auth (ASVS 7.3.1/7.3.2, O-9).
SESSION_COOKIE_AGE = env_int("ADVISOR_SESSION_HOURS", 10, minimum=1) * 3600
ADVISOR_IDLE_MINUTES = env_int("ADVISOR_IDLE_MINUTES", 30, minimum=1)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Strict"
CSRF_USE_SESSIONS = False
CSRF_COOKIE_AGE = None
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
if HTTPS:
    SESSION_COOKIE_NAME = "__Host-session"
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_NAME = "__Host-csrftoken"
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    # Only behind the proxy in deploy/, which sets this header itself and drops the client's.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = [
        *(f"https://{host}" for host in ALLOWED_HOSTS if host != "*"),
        *TRUSTED_ORIGINS,
    ]

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "no-referrer"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# A strict policy: our own scripts and styles only, no inline code, no outside origin.
SECURE_CSP = {
    "default-src": [CSP.NONE],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
    "manifest-src": [CSP.NONE],
    "worker-src": [CSP.NONE],
}

# Nothing that identifies a visitor is logged: no access log (Daphne runs with -v 0), and no
# message text or phone number is ever passed to a logger. Django's request logger prints only
# paths, which carry no identifier on the visitor side.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {
        "not_a_quick_exit": {"()": "django.utils.log.CallbackFilter", "callback": not_a_quick_exit}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"filters": ["not_a_quick_exit"]},
        "daphne.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        "daphne.server": {"level": "WARNING"},
        "django.channels.server": {"handlers": [], "level": "CRITICAL", "propagate": False},
        # The twilio SDK logs request URLs and query parameters (phone numbers) at INFO, and
        # urllib3 logs URLs at DEBUG: neither may reach a log line (T-9, D-4).
        "twilio": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# SMS through Twilio (sms/, docs/sms.md). With none of these set the SMS channel is off, its
# webhooks answer 404 and everything else runs; a half-set or malformed one stops the start.
_twilio = twilio_from_environment()
SMS_ENABLED = _twilio.enabled
TWILIO_ACCOUNT_SID = _twilio.account_sid
TWILIO_AUTH_TOKEN = _twilio.auth_token
TWILIO_AUTH_TOKEN_SECONDARY = _twilio.auth_token_secondary  # during a token rotation (T-10)
TWILIO_WEBHOOK_BASE_URL = _twilio.webhook_base_url
TWILIO_FROM_NUMBER = _twilio.from_number
TWILIO_MESSAGING_SERVICE_SID = _twilio.messaging_service_sid
# Delete each text at Twilio once it is processed or delivered (issue 3, point 10).
TWILIO_DELETE_MESSAGES = _twilio.delete_messages
TWILIO_HTTP_TIMEOUT_SECONDS = _twilio.http_timeout
# For tests only: send the SDK's requests to a local Twilio stand-in on 127.0.0.1.
TWILIO_API_BASE_URL = _twilio.api_base_url

# The service.
SERVICE_NAME = env_str("SERVICE_NAME", "Stödlinjen")
# The visitor pages' <title>: static, never changed by a new message, and neutral enough to be
# seen in a tab list or the browser's history (QE-13).
VISITOR_PAGE_TITLE = env_str("VISITOR_PAGE_TITLE") or SERVICE_NAME
# Where the quick-exit button goes (issue 4, QE-1): a neutral page that shows nothing personal
# and that anyone might plausibly have open. The default is SMHI, the Swedish public weather
# service: no login, no personalised content, no adverts, fast on a phone (GOV.UK's component
# uses BBC Weather for the same reasons).
QUICK_EXIT_URL = env_str("QUICK_EXIT_URL", "https://www.smhi.se/")
if not QUICK_EXIT_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured(f"QUICK_EXIT_URL={QUICK_EXIT_URL!r} must be an http(s) URL")
MAX_MESSAGE_LENGTH = 4000
# How long a visitor's token stays valid after the conversation ends (to read the last messages).
VISITOR_TOKEN_GRACE_MINUTES = env_int("VISITOR_TOKEN_GRACE_MINUTES", 30, minimum=0)
DEFAULT_ADVISOR_CAPACITY = env_int("DEFAULT_ADVISOR_CAPACITY", 3, minimum=1)
# Sockets that send nothing (not even the client's heartbeat) for this long are closed.
SOCKET_IDLE_SECONDS = env_int("SOCKET_IDLE_SECONDS", 75, minimum=10)
# A socket whose client leaves more than this many bytes unread is closed (code 4429); the client
# resumes from its last seq. The kernel's send buffer of each socket gets the same bound.
SOCKET_SEND_BUFFER_BYTES = env_int("SOCKET_SEND_BUFFER_BYTES", 256 * 1024, minimum=16 * 1024)
# ...once it has stayed over that bound this long (a burst, such as a long catch-up to a client
# that reads, drains well within it).
SOCKET_SEND_DRAIN_SECONDS = env_int("SOCKET_SEND_DRAIN_SECONDS", 10, minimum=1)
# On PostgreSQL the domain's hot changes (texts, starts, takes, closes, catch-ups) run as
# statements compiled from their one definition, without a thread (advice.store); false makes
# them through the ORM on a thread, as on SQLite.
MESSAGE_FAST_PATH = env_bool("MESSAGE_FAST_PATH", True)

# Interpreters, opening hours, return codes (docs/protocol.md, "Interpreters, opening hours,
# return codes").
# "The next one" prefers conversations the advisor can take without an interpreter, but only
# until a conversation has waited this long; then plain queue order (nobody waits for ever).
TAKE_NEXT_PREFERENCE_MINUTES = env_int("TAKE_NEXT_PREFERENCE_MINUTES", 10, minimum=0)
# Each process keeps whether the line is open for this long (advice.hours.cached_line_status):
# a change to the hours in the admin holds in other processes within it. 0: no cache.
OPENING_HOURS_CACHE_SECONDS = env_int("OPENING_HOURS_CACHE_SECONDS", 10, minimum=0)
# An interpreter's invitation link must be opened within this many hours.
INTERPRETER_LINK_HOURS = env_int("INTERPRETER_LINK_HOURS", 4, minimum=1)
# A return code links a new chat to the earlier one within this many days.
RETURN_CODE_DAYS = env_int("RETURN_CODE_DAYS", 30, minimum=1)
# Wrong return codes the whole service accepts per hour before it stops checking codes for
# the rest of the hour (kept in Redis, or in memory without it; never keyed by address).
RETURN_CODE_FAILURES_PER_HOUR = env_int("RETURN_CODE_FAILURES_PER_HOUR", 60, minimum=1)
# The advisor's private notes on a conversation.
MAX_NOTE_LENGTH = 10000
