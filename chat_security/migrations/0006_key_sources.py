"""Identity providers (SPEC §14): an integration's key source and its last good set.

Nothing existing changes: the key kinds gain ``remote_key`` (a label; fetched
keys are never rows of ``Key``) and public keys may now be ES256 or EdDSA.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat_security", "0005_integrations"),
    ]

    operations = [
        migrations.AlterField(
            model_name="key",
            name="kind",
            field=models.CharField(
                choices=[
                    ("secret", "signing secret (HS256)"),
                    ("public_key", "client public key (RS256, ES256 or EdDSA)"),
                    ("service_key", "service key pair (RSA-OAEP-256)"),
                    ("signing_key", "site signing key pair (RS256/ES256)"),
                    ("remote_key", "identity provider key (fetched)"),
                ],
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="KeySource",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("jwks_url", "JWKS URL"),
                            ("oidc_issuer", "OpenID Connect issuer"),
                        ],
                        max_length=16,
                    ),
                ),
                ("url", models.CharField(max_length=2048)),
                ("jwks_uri", models.CharField(max_length=2048)),
                ("issuer", models.CharField(blank=True, max_length=2048)),
                ("keys", models.JSONField(blank=True, default=list)),
                ("skipped", models.JSONField(blank=True, default=list)),
                (
                    "fetched_at",
                    models.DateTimeField(blank=True, help_text="last good fetch", null=True),
                ),
                ("attempted_at", models.DateTimeField(blank=True, null=True)),
                ("outcome", models.CharField(blank=True, max_length=8)),
                ("error", models.TextField(blank=True)),
                (
                    "finished_at",
                    models.DateTimeField(blank=True, help_text="last fetch ended", null=True),
                ),
                ("created_at", models.DateTimeField()),
                ("created_by", models.CharField(blank=True, max_length=150)),
                (
                    "integration",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="key_source",
                        to="chat_security.integration",
                    ),
                ),
            ],
            options={
                "verbose_name": "web chat key source",
            },
        ),
    ]
