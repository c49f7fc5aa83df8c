"""Drop the opening hours' version (migration 0004): its triggers, function, table and sequence.
Each process now caches the line's status for OPENING_HOURS_CACHE_SECONDS instead
(advice.hours.cached_line_status), cleared by the models' signals. Nothing to do on SQLite,
where 0004 made nothing; migrating back makes them again, with 0004's own code."""

import importlib

from django.db import migrations

version = importlib.import_module("advice.migrations.0004_opening_hours_version")


class Migration(migrations.Migration):
    dependencies = [("advice", "0004_opening_hours_version")]

    operations = [migrations.RunPython(version.drop, version.create)]
