"""A version of the opening hours that every write to them changes, kept by PostgreSQL itself.

A process remembers that the line is open (advice.hours, "The open line, remembered") together
with this version, and a visitor's start is stored only while the version is still the one it
was computed from (advice.fastpath.start_web). Triggers, not Django signals, change it: they
also see bulk updates and deletes, `manage.py add_holidays`, a TRUNCATE, and writes from every
process. Each new version comes from a sequence, so no value ever comes back (not after a
rollback, not after the tables are emptied between tests); the table is not a model, so
`flush` leaves it alone. SQLite has no fast path and needs none of this.
"""

from django.db import migrations

VERSION_TABLE = "advice_opening_hours_version"
FUNCTION = "advice_opening_hours_changed"
TABLES = ["OpeningSchedule", "WeeklyHours", "OpeningException", "Holiday"]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    statements = [
        f"CREATE SEQUENCE {VERSION_TABLE}_seq",
        f"CREATE TABLE {VERSION_TABLE} (id smallint PRIMARY KEY CHECK (id = 1), "
        f"version bigint NOT NULL)",
        f"INSERT INTO {VERSION_TABLE} VALUES (1, nextval('{VERSION_TABLE}_seq'))",
        f"""CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {VERSION_TABLE} (id, version) VALUES (1, nextval('{VERSION_TABLE}_seq'))
            ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version;
            RETURN NULL;
        END
        $$""",
    ]
    for name in TABLES:
        table = apps.get_model("advice", name)._meta.db_table
        statements.append(
            f'CREATE TRIGGER {FUNCTION} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{table}" '
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )
    for sql in statements:
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in TABLES:
        table = apps.get_model("advice", name)._meta.db_table
        schema_editor.execute(f'DROP TRIGGER IF EXISTS {FUNCTION} ON "{table}"')
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    schema_editor.execute(f"DROP TABLE IF EXISTS {VERSION_TABLE}")
    schema_editor.execute(f"DROP SEQUENCE IF EXISTS {VERSION_TABLE}_seq")


class Migration(migrations.Migration):
    dependencies = [("advice", "0003_default_emergency_numbers")]

    operations = [migrations.RunPython(create, drop)]
