"""Re-encrypt everything stored encrypted with the newest key in ENCRYPTION_KEYS.

Rotating a key: put the new key first in ENCRYPTION_KEYS (keep the old ones after it) and
restart, so new values are written with it and old ones still decrypt; run this command; then
drop the old keys and restart again. The command is safe to run while the service runs, and to
run again: a value already under the newest key is left alone, and a value that changed since it
was read is not overwritten.

Which columns are encrypted is found, not listed: every text column of the project's own apps
that is long enough to hold a token is scanned for values that start like a Fernet token, and a
value counts only if the configured keys decrypt it (Fernet tokens are authenticated, so nothing
else can pass). A column in which no value decrypts is not an encrypted column. So message
bodies, advisor notes, phone numbers and SMS bodies are all covered, and so is any encrypted
column added later. In an encrypted column, a value no configured key decrypts is counted and
makes the command fail: the old key it needs must not be dropped yet. Nothing is printed but
column names and counts.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from advice import crypto

# Every Fernet token starts with the version byte 0x80, which base64 writes as "gAAAAA".
FERNET_PREFIX = "gAAAAA"


def encrypted_columns() -> list[tuple[type[models.Model], str]]:
    """The text columns of the project's own apps (not Django's, not third parties')."""
    root = Path(settings.BASE_DIR).resolve()
    columns = []
    for config in apps.get_app_configs():
        if root not in Path(config.path).resolve().parents:
            continue
        for model in config.get_models():
            if model._meta.proxy or not model._meta.managed:
                continue
            for field in model._meta.concrete_fields:
                if not isinstance(field, (models.TextField, models.CharField)) or field.choices:
                    continue
                # The shortest Fernet token (of an empty text) has 100 characters.
                if field.max_length is not None and field.max_length < 100:
                    continue
                columns.append((model, field.attname))
    return columns


class Command(BaseCommand):
    help = "Re-encrypt stored ciphertext (message bodies, notes, phone numbers) with the new key."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would change; change nothing"
        )

    def handle(self, *args, batch_size: int, dry_run: bool, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        newest = Fernet(settings.ENCRYPTION_KEYS[0].encode())
        unreadable_total = 0
        for model, column in encrypted_columns():
            rotated, current, unreadable = self.rotate_column(
                model, column, newest, batch_size, dry_run
            )
            if not rotated and not current:
                # Nothing here decrypts: not an encrypted column, whatever its values look like
                # (a plain text may well start with "gAAAAA").
                continue
            unreadable_total += unreadable
            if rotated or current or unreadable:
                label = f"{model._meta.label}.{column}"
                verb = "to re-encrypt" if dry_run else "re-encrypted"
                self.stdout.write(
                    f"{label}: {rotated} {verb}, {current} already under the newest key"
                    + (f", {unreadable} NOT readable with any configured key" if unreadable else "")
                )
        if unreadable_total:
            # Dropping the old keys now would lose these values for good.
            raise CommandError(
                f"{unreadable_total} value(s) cannot be decrypted with ENCRYPTION_KEYS; "
                "keep the old keys until they are found"
            )
        self.stdout.write("Done." if not dry_run else "Dry run: nothing changed.")

    def rotate_column(
        self,
        model: type[models.Model],
        column: str,
        newest: Fernet,
        batch_size: int,
        dry_run: bool,
    ) -> tuple[int, int, int]:
        rotated = current = unreadable = 0
        candidates = model._default_manager.filter(**{f"{column}__startswith": FERNET_PREFIX})
        last_pk = None
        while True:
            batch = candidates.order_by("pk")
            if last_pk is not None:
                batch = batch.filter(pk__gt=last_pk)
            rows = list(batch.values_list("pk", column)[:batch_size])
            if not rows:
                return rotated, current, unreadable
            last_pk = rows[-1][0]
            with transaction.atomic():
                for pk, value in rows:
                    token = value.encode("ascii", errors="replace")
                    try:
                        newest.decrypt(token)
                        current += 1
                        continue
                    except InvalidToken:
                        pass
                    try:
                        fresh = crypto.rotate(value)
                    except (InvalidToken, ValueError):
                        unreadable += 1
                        continue
                    rotated += 1
                    if not dry_run:
                        # Only if nobody changed the value since it was read (a note being
                        # edited while this runs keeps the edit; it is under the newest key).
                        model._default_manager.filter(pk=pk, **{column: value}).update(
                            **{column: fresh}
                        )
