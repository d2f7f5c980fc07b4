"""Integrations (SPEC §13): every existing key, the mode, contacts and user
revocations move into the integration ``default`` and its user space.

Nothing a token is judged by changes: a token accepted before this migration
is accepted after it (tests/test_upgrade.py runs it on a database made by the
previous release).
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

KEY_ALGORITHMS = {"secret": "HS256", "public_key": "RS256", "service_key": "RSA-OAEP-256"}


def into_default(apps: Any, schema_editor: Any) -> None:
    SecurityConfig = apps.get_model("chat_security", "SecurityConfig")
    Integration = apps.get_model("chat_security", "Integration")
    Key = apps.get_model("chat_security", "Key")
    config = SecurityConfig.objects.filter(pk=1).first()
    created_at = getattr(config, "changed_at", None)
    default, _created = Integration.objects.get_or_create(
        name="default",
        defaults={
            "enabled": config.enabled if config is not None else True,
            "created_at": created_at or timezone.now(),
        },
    )
    Key.objects.filter(integration=None).update(integration=default)
    for kind, alg in KEY_ALGORITHMS.items():
        Key.objects.filter(kind=kind, alg="").update(alg=alg)


def back_to_one(apps: Any, schema_editor: Any) -> None:
    SecurityConfig = apps.get_model("chat_security", "SecurityConfig")
    Integration = apps.get_model("chat_security", "Integration")
    default = Integration.objects.filter(name="default").first()
    if default is not None:
        SecurityConfig.objects.filter(pk=1).update(enabled=default.enabled)


class Migration(migrations.Migration):
    dependencies = [
        ("chat_security", "0004_revoked_user_first_revoked_at"),
    ]

    operations = [
        migrations.CreateModel(
            name="Integration",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.SlugField(unique=True)),
                ("issuer", models.CharField(blank=True, help_text="the iss its tokens carry", max_length=255)),
                ("audience", models.CharField(blank=True, help_text="a value aud must hold", max_length=255)),
                ("enabled", models.BooleanField(default=True, verbose_name="secure this chat")),
                ("paths", models.JSONField(blank=True, default=list)),
                ("user_space", models.SlugField(default="default")),
                ("created_at", models.DateTimeField()),
                ("created_by", models.CharField(blank=True, max_length=150)),
            ],
            options={"verbose_name": "web chat integration", "ordering": ["created_at", "pk"]},
        ),
        migrations.AddField(
            model_name="key",
            name="integration",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="keys",
                to="chat_security.integration",
            ),
        ),
        migrations.AddField(
            model_name="key",
            name="alg",
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name="key",
            name="staged",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="key",
            name="kind",
            field=models.CharField(
                choices=[
                    ("secret", "signing secret (HS256)"),
                    ("public_key", "client public key (RS256)"),
                    ("service_key", "service key pair (RSA-OAEP-256)"),
                    ("signing_key", "site signing key pair (RS256/ES256)"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(into_default, back_to_one),
        migrations.AlterField(
            model_name="key",
            name="integration",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="keys",
                to="chat_security.integration",
            ),
        ),
        migrations.RemoveField(model_name="securityconfig", name="enabled"),
        migrations.AddField(
            model_name="revokeduser",
            name="user_space",
            field=models.SlugField(default="default"),
        ),
        migrations.AlterField(
            model_name="revokeduser",
            name="user_id",
            field=models.CharField(max_length=255),
        ),
        migrations.AddConstraint(
            model_name="revokeduser",
            constraint=models.UniqueConstraint(
                fields=("user_space", "user_id"), name="chat_security_revoked_space_user"
            ),
        ),
        migrations.AddField(
            model_name="contact",
            name="user_space",
            field=models.SlugField(default="default"),
        ),
        migrations.AlterField(
            model_name="contact",
            name="user_id",
            field=models.CharField(max_length=255),
        ),
        migrations.AddConstraint(
            model_name="contact",
            constraint=models.UniqueConstraint(
                fields=("user_space", "user_id"), name="chat_security_contact_space_user"
            ),
        ),
    ]
