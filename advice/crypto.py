"""Encryption at rest for message bodies and phone numbers.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, through MultiFernet so keys rotate:
the first key in ENCRYPTION_KEYS encrypts, every key decrypts.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as e:
        raise ImproperlyConfigured(
            "ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes)"
        ) from e


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        # Never log the token or the plaintext; the caller shows a placeholder.
        raise ValueError("a stored value cannot be decrypted with the configured keys") from None


def rotate(token: str) -> str:
    """Re-encrypt with the newest key (for `manage.py rotate_keys`)."""
    return fernet().rotate(token.encode("ascii")).decode("ascii")


def keyed_hash(value: str, purpose: str) -> str:
    """A stable, keyed digest for lookups (tokens, phone numbers) that cannot be reversed."""
    key = hashlib.sha256(f"{purpose}:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
