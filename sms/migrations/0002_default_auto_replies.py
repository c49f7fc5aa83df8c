"""The automatic replies as the admin first shows them (edited there afterwards)."""

from django.db import migrations

REPLIES = {
    "received": (
        "Tack för ditt sms, det har kommit fram. En rådgivare svarar så snart som möjligt, "
        "troligen inom {wait}. Är det akut, ring 112.",
        "Thank you for your text, it has arrived. An advisor will answer as soon as possible, "
        "probably within {wait}. In an emergency, call 112.",
    ),
    "closed": (
        "Tack för ditt sms, det har kommit fram. Linjen är stängd just nu och öppnar {opens}; "
        "då svarar en rådgivare. Är det akut, ring 112.",
        "Thank you for your text, it has arrived. The line is closed right now and opens "
        "{opens}; an advisor will answer then. In an emergency, call 112.",
    ),
}


def add_replies(apps, schema_editor):
    AutoReply = apps.get_model("sms", "AutoReply")
    for kind, (text_sv, text_en) in REPLIES.items():
        AutoReply.objects.get_or_create(kind=kind, defaults={"text_sv": text_sv, "text_en": text_en})


class Migration(migrations.Migration):
    dependencies = [("sms", "0001_initial")]

    operations = [migrations.RunPython(add_replies, migrations.RunPython.noop)]
