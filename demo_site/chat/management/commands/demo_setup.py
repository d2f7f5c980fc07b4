"""``manage.py demo_setup``: the demo's logins and keys, idempotently.

Assumes a migrated database (``scripts/demo.sh`` runs ``migrate`` first).
Existing users and keys are left as they are, so running it again changes
nothing. The signing secret is generated but never printed: the demo signs
its own tokens, and the admin panel shows its fingerprint.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from chat_security.models import Key, KeyKind, SecurityConfig

DEFAULT_ADDR = "127.0.0.1:8000"
ACTOR = "demo_setup"

#: username, password, first name, last name, email, superuser
DEMO_USERS = (
    ("admin", "admin-demo-2026", "Ada", "Admin", "admin@example.com", True),
    ("alice", "alice-demo-2026", "Alice", "Example", "alice@example.com", False),
    ("bob", "bob-demo-2026", "Bob", "Example", "bob@example.com", False),
)


class Command(BaseCommand):
    # scripts/demo.sh runs the system checks once, with runserver.
    requires_system_checks: list[str] = []
    help = (
        "Create the demo logins (admin, alice, bob), a signing secret and a service key "
        "pair if they do not exist yet. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--addr",
            default=DEFAULT_ADDR,
            help="host:port the demo will be served on (only printed; default 127.0.0.1:8000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.url = f"http://{options['addr']}/"
        with transaction.atomic():
            created_users = [name for name in self._users() if name]
            secret_created = self._secret()
            service_created = self._service_key()
            enabled = SecurityConfig.load().enabled
        self._report(created_users, secret_created, service_created, enabled)

    def _users(self) -> list[str]:
        User = get_user_model()
        created = []
        for username, password, first, last, email, superuser in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            user = User(
                username=username,
                first_name=first,
                last_name=last,
                email=email,
                is_staff=superuser,
                is_superuser=superuser,
            )
            user.set_password(password)
            user.save()
            created.append(username)
        return created

    def _secret(self) -> bool:
        if Key.objects.active(KeyKind.SECRET):
            return False
        Key.objects.generate_secret(actor=ACTOR)  # the secret value is deliberately dropped
        return True

    def _service_key(self) -> bool:
        if Key.objects.active(KeyKind.SERVICE_KEY):
            return False
        Key.objects.generate_service_keypair(actor=ACTOR)
        return True

    def _report(
        self, created_users: list[str], secret_created: bool, service_created: bool, enabled: bool
    ) -> None:
        out = self.stdout
        out.write(
            f"Users created: {', '.join(created_users) if created_users else 'none (all exist)'}"
        )
        out.write(
            "Signing secret: "
            + (
                "generated (not shown; the demo signs its own tokens)"
                if secret_created
                else "exists"
            )
        )
        out.write("Service key pair: " + ("generated" if service_created else "exists"))
        out.write(f"Web chat security: {'on' if enabled else 'off'}")
        out.write("")
        out.write(self.style.SUCCESS(f"Demo site: {self.url}"))
        out.write("Logins (user id = the sub their chat tokens carry):")
        ids = dict(
            get_user_model()
            .objects.filter(username__in=[u[0] for u in DEMO_USERS])
            .values_list("username", "pk")
        )
        for username, password, *_rest, superuser in DEMO_USERS:
            role = "superuser: admin panel, agent page" if superuser else "regular user"
            user_id = str(ids.get(username, "?"))
            out.write(f"  {username:<6} / {password:<16} user id {user_id:<3} ({role})")
        if enabled:
            out.write(
                "Anonymous visitors can chat on the login page once security is off: "
                ".venv/bin/python manage.py chat_security security off"
            )
