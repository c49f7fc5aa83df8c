"""The service's own settings, with the secrets a test run needs (DEBUG stays off, as in
production). Child processes the tests start (Daphne, workers) inherit the same environment."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 40)
os.environ.setdefault("ENCRYPTION_KEYS", "dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU=")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
# The race tests hold 20 connections at once on top of the hot path's worker threads; the
# default pool of 20 would make racers wait for a connection instead of racing.
os.environ.setdefault("DATABASE_POOL_MAX", "40")

from config.settings import *  # noqa: F403
