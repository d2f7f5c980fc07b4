"""Scheduled enforcement (SPEC §15): when an integration's switch turns on by itself.

Nothing existing changes: every integration starts with no schedule.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat_security", "0006_key_sources"),
    ]

    operations = [
        migrations.AddField(
            model_name="integration",
            name="enforce_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
