"""The four numbers the line shows while closed, so the admin starts with them to edit."""

from django.db import migrations

NUMBERS = [
    ("Emergency: police, ambulance, fire", "112"),
    ("Kvinnofridslinjen, open day and night", "020-50 50 50"),
    ("BRIS, for children and young people, open day and night", "116 111"),
    ("Police, when it is not an emergency", "114 14"),
]


def add_numbers(apps, schema_editor):
    EmergencyNumber = apps.get_model("advice", "EmergencyNumber")
    if not EmergencyNumber.objects.exists():
        for order, (label, number) in enumerate(NUMBERS):
            EmergencyNumber.objects.create(label=label, number=number, order=order)


class Migration(migrations.Migration):
    dependencies = [("advice", "0002_interpreters_hours_return_codes")]

    operations = [migrations.RunPython(add_numbers, migrations.RunPython.noop)]
