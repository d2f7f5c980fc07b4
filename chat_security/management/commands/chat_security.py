"""``manage.py chat_security <subcommand>``: the admin panel's actions for scripts.

Thin: every subcommand calls the key store or the engine. Results are JSON on
stdout; bad input is a one-line error on stderr with exit code 2. Key
subcommands act on one integration (SPEC §13), ``--integration NAME``,
``default`` unless told; ``revoke KID`` needs none (kids are unique).
Subcommands and options are in ``management/cli_arguments.py``, the checks of
what is typed in ``cli_input.py``, what ``status`` and ``integration`` print in
``cli_status.py``.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError

from chat_security import (
    checks,
    deploy_checks,
    diagnosis,
    hygiene,
    identity,
    keys,
    refusals,
    tokens,
    usage,
)
from chat_security.exceptions import ChatSecurityError, TokenError
from chat_security.management import cli_status
from chat_security.management.cli_arguments import CliParser, add_subcommands
from chat_security.management.cli_input import (
    check_known,
    extra_claims,
    fail,
    file_or_stdin,
    grace_seconds,
    moment,
    token_or_stdin,
)
from chat_security.models import Integration, Key, KeyKind, RevokedUser, SecurityConfig
from chat_security.remote import sources

ACTOR = "cli"
WITHOUT_ENCRYPTION_KEYS = keys.WITHOUT_ENCRYPTION_KEYS


class Command(BaseCommand):
    help = "Manage web chat security: integrations, keys, the security switch, token checks."
    # Django's full system check would print every warning (e.g. W001) on stderr
    # before each result; scripts get one line. handle() runs this app's checks
    # itself and refuses to act on a misconfiguration.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = CliParser
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        add_subcommands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["subcommand"].replace("-", "_")
        found = (
            *checks.check_settings(),
            *checks.check_stray_settings(),
            *deploy_checks.check_middleware(),
        )
        silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))
        errors = [m for m in found if m.is_serious() and m.id not in silenced]
        if errors:
            raise fail(f"{errors[0].id}: {errors[0].msg} Run 'manage.py check' for details.")
        try:
            named = options.get("integration")
            if named:
                check_known([named] if isinstance(named, str) else named)
            getattr(self, f"do_{name}")(options)
        except ChatSecurityError as exc:
            raise fail(str(exc)) from exc
        except DatabaseError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise fail(f"the database cannot be used ({first}); has 'migrate' been run?") from exc

    def emit(self, data: Any) -> None:
        # ASCII-only output: a claim may hold a lone surrogate that no encoder can print.
        self.stdout.write(json.dumps(data, ensure_ascii=True, sort_keys=False))

    # -- subcommands -------------------------------------------------------------

    def do_verify(self, options: dict[str, Any]) -> None:
        token = token_or_stdin(options["token"]).strip()
        if isinstance(token, bytes) and token.isascii():
            token = token.decode("ascii")
        # None given: every integration, the token's iss picks (as the admin's tester).
        names = tuple(options.get("integration") or diagnosis.all_integrations())
        try:
            result = tokens.verify(
                token,
                session_subject=options.get("session_subject"),
                count_use=False,
                integration=names,
            )
        except TokenError as exc:
            diag = diagnosis.explain_failure(exc, token, names)  # the admin tester's hints
            self.emit(
                {
                    "valid": False,
                    "error": exc.code,
                    "detail": exc.detail,
                    "hints": diag.hints,
                    "integration": diag.integration,
                }
            )
            raise SystemExit(1) from None
        self.emit(
            {
                "valid": True,
                "header": result.header,
                "claims": result.claims,
                "kid": result.kid,
                "integration": result.integration,
                "identity": identity.preview(result.claims, result.private),
            }
        )

    def do_issue(self, options: dict[str, Any]) -> None:
        claims = None if options["claims"] is None else extra_claims(options["claims"])
        try:
            token = tokens.issue(
                options["sub"], claims, options["ttl"], integration=options["integration"]
            )
        except TokenError as exc:
            # issue() refuses what verify would refuse; only the --sub check names "sub".
            sub = exc.facts.get("claim") == "sub"
            what = "--sub is not a valid user id" if sub else "verify would refuse this token"
            raise fail(f"{what}: {exc.code}: {exc.detail}") from exc
        self.stdout.write(token)

    def do_security(self, options: dict[str, Any]) -> None:
        name, mode, at = options["integration"], options["mode"], options["at"]
        if at is not None and mode != "on":
            raise fail(f"--at goes with 'security on', not 'security {mode}'")
        if at is not None:
            SecurityConfig.schedule_on(moment(at), ACTOR, integration=name)
        elif mode == "cancel":
            SecurityConfig.cancel_schedule(ACTOR, integration=name)
        else:
            SecurityConfig.set_enabled(mode == "on", ACTOR, integration=name)
        integration = Integration.objects.named(name)
        done: dict[str, Any] = {"mode": "on" if integration.secured() else "off"}
        if at is not None or mode == "cancel":  # on/off print what they always printed
            done["enforce_at"] = cli_status.iso(integration.scheduled_at())
        self.emit(done)

    def do_generate_secret(self, options: dict[str, Any]) -> None:
        key, secret = Key.objects.generate_secret(ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "secret": secret})
        self._warn_without_encryption_keys()

    def do_rotate_secret(self, options: dict[str, Any]) -> None:
        grace = grace_seconds(options)
        key, secret = Key.objects.rotate_secret(grace, ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "secret": secret})
        self._warn_without_encryption_keys()

    def _warn_without_encryption_keys(self) -> None:
        """W001 at the moment it starts to matter: a key was just encrypted with SECRET_KEY."""
        warning = keys.encrypted_with_secret_key_warning()
        if warning:
            self.stderr.write(warning)

    def do_add_public_key(self, options: dict[str, Any]) -> None:
        text = file_or_stdin(options["file"])
        key = Key.objects.add_public_key(text, ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "fingerprint": key.fingerprint})

    def do_add_jwks_url(self, options: dict[str, Any]) -> None:
        source = sources.add_jwks_url(options["url"], options["integration"], ACTOR)
        self.emit(cli_status.source_status(source))

    def do_add_oidc_issuer(self, options: dict[str, Any]) -> None:
        source = sources.add_oidc_issuer(options["issuer"], options["integration"], ACTOR)
        self.emit(cli_status.source_status(source))

    def do_refresh_keys(self, options: dict[str, Any]) -> None:
        outcome = sources.refresh(options["integration"], ACTOR)
        self.emit(
            {
                "integration": options["integration"],
                "ok": outcome.ok,
                "added": list(outcome.added),
                "removed": list(outcome.removed),
                "skipped": list(outcome.skipped),
                "error": outcome.error or None,
            }
        )
        if not outcome.ok:
            raise SystemExit(1)

    def do_remove_key_source(self, options: dict[str, Any]) -> None:
        source = sources.remove(options["integration"], ACTOR)
        self.emit({"integration": options["integration"], "source": source.url, "removed": True})

    def do_generate_service_keypair(self, options: dict[str, Any]) -> None:
        key = Key.objects.generate_service_keypair(
            ACTOR, grace_seconds(options), integration=options["integration"]
        )
        self.emit({"kid": key.kid, "public_key_pem": key.public_pem})
        self._warn_without_encryption_keys()

    def do_generate_signing_keypair(self, options: dict[str, Any]) -> None:
        key = Key.objects.generate_signing_keypair(
            options["alg"], ACTOR, integration=options["integration"]
        )
        self._emit_signing_key(key)

    def do_rotate_signing_key(self, options: dict[str, Any]) -> None:
        grace = grace_seconds(options)
        key = Key.objects.rotate_signing_key(
            grace, ACTOR, integration=options["integration"], alg=options["alg"]
        )
        self._emit_signing_key(key)

    def do_rotate_due(self, options: dict[str, Any]) -> None:
        kinds = list(hygiene.ROTATED_BY_DEFAULT)
        if options["include_secrets"]:
            kinds.append(KeyKind.SECRET)
        if options["include_service_keys"]:
            kinds.append(KeyKind.SERVICE_KEY)
        result = hygiene.rotate_due(
            integration=options["integration"],
            kinds=kinds,
            grace=grace_seconds(options),
            dry_run=options["dry_run"],
            actor=ACTOR,
        )
        self.emit(result)
        if result["rotated"] and not options["dry_run"]:
            self._warn_without_encryption_keys()
        if result["failed"]:
            raise SystemExit(1)

    def _emit_signing_key(self, key: Key) -> None:
        self.emit(
            {
                "kid": key.kid,
                "alg": key.alg,
                "public_key_pem": key.public_pem,
                "state": str(key.state()),
            }
        )
        self._warn_without_encryption_keys()

    def do_revoke(self, options: dict[str, Any]) -> None:
        key = Key.objects.revoke(options["kid"], ACTOR)
        self.emit({"kid": key.kid, "state": key.state()})

    def do_revoke_user(self, options: dict[str, Any]) -> None:
        try:
            user_id = tokens.user_id_of({"sub": options["user_id"]})
        except TokenError as exc:
            raise fail(f"not a valid user id: {exc.detail}") from exc
        revoked = RevokedUser.objects.revoke(user_id, ACTOR, integration=options["integration"])
        self.emit(
            {
                "user_id": user_id,
                "revoked_at": revoked.revoked_at.isoformat(),
                "user_space": revoked.user_space,
            }
        )

    def do_delete_contact(self, options: dict[str, Any]) -> None:
        space = Integration.objects.named(options["integration"]).user_space
        self.emit(identity.delete_contact(options["user_id"], ACTOR, user_space=space))

    def do_status(self, options: dict[str, Any]) -> None:
        usage.flush_usage()
        self.emit(cli_status.status())

    def do_failures(self, options: dict[str, Any]) -> None:
        named = options["integration"]
        rows = refusals.recent([named] if named else None)
        self.emit({"failures": [refusals.describe(row) for row in rows]})

    def do_generate_encryption_key(self, options: dict[str, Any]) -> None:
        self.stdout.write(keys.generate_encryption_key())

    def do_reencrypt(self, options: dict[str, Any]) -> None:
        result = Key.objects.reencrypt(ACTOR)
        self.emit(result)
        if result["unreadable"]:
            raise SystemExit(1)

    def do_integration(self, options: dict[str, Any]) -> None:
        action = options["action"]
        if action == "list":
            self.emit(cli_status.integration_list())
        elif action == "add":
            added = Integration.objects.add(
                options["name"],
                issuer=options["issuer"],
                audience=options["audience"],
                own_users=options["own_users"],
                paths=options["path"],
                actor=ACTOR,
            )
            self.emit({**cli_status.describe(added), "kids": []})
        elif action == "set":
            changed = Integration.objects.change(
                options["name"],
                issuer=options["issuer"],
                audience=options["audience"],
                paths=[] if options["no_paths"] else options["path"],
                actor=ACTOR,
            )
            kids = Key.objects.filter(integration=changed).values_list("kid", flat=True)
            self.emit({**cli_status.describe(changed), "kids": list(kids)})
        else:
            Integration.objects.remove(options["name"], ACTOR)
            self.emit({"name": options["name"], "removed": True})
