"""``manage.py chat_security <subcommand>``: the admin panel's actions for scripts.

Thin: every subcommand calls the key store or the engine. Results are JSON on
stdout; bad input is a one-line error on stderr with exit code 2. Key
subcommands act on one integration (SPEC §13), ``--integration NAME``,
``default`` unless told; ``revoke KID`` needs none (kids are unique).
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from chat_security import checks, diagnosis, hygiene, identity, keys, refusals, tokens, usage
from chat_security.conf import MAX_GRACE_HOURS, app_settings
from chat_security.exceptions import ChatSecurityError, TokenError
from chat_security.integrations import DEFAULT_INTEGRATION
from chat_security.models import Integration, Key, KeyKind, KeySource, RevokedUser, SecurityConfig
from chat_security.remote import sources

ACTOR = "cli"
MAX_INPUT = 1 << 20
WITHOUT_ENCRYPTION_KEYS = keys.WITHOUT_ENCRYPTION_KEYS


#: Claims ``issue`` sets itself, and the option that sets each.
_SET_BY_OPTIONS = {
    "sub": "--sub",
    "userId": "--sub",
    "iat": "--ttl (iat is the time of issue)",
    "exp": "--ttl",
}


def _fail(message: str) -> CommandError:
    return CommandError(message.splitlines()[0] if message else "error", returncode=2)


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= MAX_GRACE_HOURS:
        raise _fail(f"--grace must be a number of hours from 0 to {MAX_GRACE_HOURS}")
    return hours


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _read_stdin() -> str | bytes:
    """Raw bytes when possible, so undecodable input is refused by the engine, not here."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    # One more than the cap: oversized input stays oversized (token_too_large,
    # "too large") instead of being cut to a size that would be parsed.
    return stream.read(MAX_INPUT + 1)


def _check_known(names: Iterable[str]) -> None:
    """Refuse (exit 2) an integration name that names none, before anything is done."""
    names = list(names)
    known = set(Integration.objects.filter(name__in=names).values_list("name", flat=True))
    for name in names:
        if name != DEFAULT_INTEGRATION and name not in known:
            raise _fail(f"no integration named {name[:60]!r} (see 'integration list')")


def _configured(value: Any) -> Any:
    """An issuer or audience as configured: a string, a list (``default``'s settings
    may hold one), or None when not checked."""
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, list | tuple) else value


def _integrations() -> list[Integration]:
    """Every integration, ``default`` first; read only (a missing ``default`` row is
    shown as a fresh install has it, not created)."""
    rows = list(Integration.objects.all())
    default = [r for r in rows if r.name == DEFAULT_INTEGRATION] or [
        Integration(name=DEFAULT_INTEGRATION)
    ]
    return default + [r for r in rows if r.name != DEFAULT_INTEGRATION]


def _describe(integration: Integration) -> dict[str, Any]:
    """An integration's rules as its tokens are judged: ``default`` takes its issuer,
    audience and paths from ISSUER, AUDIENCE and PROTECTED_PATHS."""
    if integration.name == DEFAULT_INTEGRATION:
        issuer, audience = app_settings.ISSUER, app_settings.AUDIENCE
        paths = app_settings.PROTECTED_PATHS
        paths = [paths] if isinstance(paths, str) else list(paths or ())
    else:
        issuer, audience, paths = integration.issuer, integration.audience, integration.paths
    return {
        "name": integration.name,
        "issuer": _configured(issuer),
        "audience": _configured(audience),
        "mode": "on" if integration.secured() else "off",
        "paths": list(paths),
        "user_space": integration.user_space,
        "own_users": integration.own_users,
    }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _moment(value: str) -> datetime:
    """``--at``: an ISO 8601 time with an offset (or Z); a naive one is refused."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"--at {value[:40]!r} is not an ISO 8601 time (e.g. 2026-12-08T09:00:00+00:00)"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise _fail(f"--at {value[:40]!r} has no time zone: add an offset such as +00:00, or Z")
    return at


def _key_status(key: Key) -> dict[str, object]:
    return {**key.as_status(), "integration": key.integration.name}


def _sources() -> dict[str, KeySource]:
    return {s.integration.name: s for s in KeySource.objects.select_related("integration")}


def _source_status(source: KeySource) -> dict[str, Any]:
    return {
        "integration": source.integration.name,
        **source.as_status(),
        "keys": [{**k, "integration": source.integration.name} for k in source.keys_status()],
    }


def _keys_by_integration() -> dict[str, list[Key]]:
    found: dict[str, list[Key]] = {}
    for key in Key.objects.select_related("integration"):
        found.setdefault(key.integration.name, []).append(key)
    return found


class _Parser(CommandParser):
    """Argument errors as one line on stderr with exit code 2 (no usage dump)."""

    #: Set on subcommands whose one argument is an identifier: a kid (an RFC 7638
    #: thumbprint is base64url, so 1 in 64 starts with "-") or a user id may begin
    #: with a dash and must still be taken as the argument, not as an option.
    identifier_only = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self.identifier_only and args:
            args = self._options_first(list(args))
        return super().parse_known_args(args, namespace)

    def _options_first(self, args: list[str]) -> list[str]:
        """``args`` as ``[options..., "--", identifier...]``: only this parser's own
        options (``--integration NAME``, ``--help``) are options, wherever they stand;
        anything else is the identifier, dash or not. After ``--`` nothing is an option."""
        options: list[str] = []
        rest: list[str] = []
        items = iter(args)
        for arg in items:
            if arg == "--":
                rest.extend(items)
                break
            action = self._option_string_actions.get(arg.partition("=")[0])
            if action is None:
                rest.append(arg)
                continue
            options.append(arg)
            value = next(items, None) if action.nargs != 0 and "=" not in arg else None
            if value is not None:
                options.append(value)  # its value, even one that starts with a dash
        return [*options, "--", *rest]

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            sys.stderr.write(f"chat_security: error: {message}\n")
            sys.exit(2)
        raise CommandError(f"Error: {message}", returncode=2)


class Command(BaseCommand):
    help = "Manage web chat security: integrations, keys, the security switch, token checks."
    # Django's full system check would print every warning (e.g. W001) on stderr
    # before each result; scripts get one line. handle() runs this app's checks
    # itself and refuses to act on a misconfiguration.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _Parser
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)

        def add(name: str, *, help: str, integration: bool = True) -> _Parser:
            """A subcommand whose ``--help`` says what it does, as the command list does;
            with ``--integration NAME`` unless told otherwise."""
            p: _Parser = sub.add_parser(name, help=help, description=help)
            if integration:
                self._integration(p)
            return p

        p = add(
            "verify",
            help="Verify a token; JSON result, exit 0 if valid, 1 if not.",
            integration=False,
        )
        p.add_argument("token", help="The token, or - to read it from stdin.")
        p.add_argument(
            "--session-subject",
            default=None,
            metavar="ID",
            help="Check as if a chat session were already bound to this user id "
            "(a different sub gives subject_changed).",
        )
        p.add_argument(
            "--integration",
            action="append",
            default=None,
            metavar="NAME",
            help="Judge it by this integration; repeat for several, of which the token's "
            "iss picks one (default: every integration, iss picks).",
        )
        p = add(
            "issue",
            help="Sign a token with the integration's active signing key pair, else its "
            "active secret, and print it.",
        )
        p.add_argument("--sub", required=True, help="User id (the sub claim).")
        p.add_argument("--claims", default=None, help="Extra claims as a JSON object.")
        p.add_argument("--ttl", type=int, default=None, help="Lifetime in seconds (default 3600).")
        p = add(
            "security",
            help="Turn the integration's 'Secure your web chat' on or off, or schedule it "
            "to turn on (on --at TIME; cancel).",
        )
        p.add_argument(
            "mode",
            choices=["on", "off", "cancel"],
            help="on: tokens required; off: optional (and any schedule cancelled); cancel: "
            "cancel a scheduled switch-on.",
        )
        p.add_argument(
            "--at",
            default=None,
            metavar="TIME",
            help="With on: turn on at this ISO 8601 time with an offset or Z "
            "(2026-12-08T09:00:00+00:00), not now.",
        )
        add("generate-secret", help="Create the first signing secret and print it once.")
        p = add(
            "rotate-secret", help="Replace the active secret; the old one keeps a grace period."
        )
        self._grace(p)
        p = add(
            "add-public-key",
            help="Register a client's public key: RSA (RS256), EC P-256 (ES256) or Ed25519 "
            "(EdDSA).",
        )
        p.add_argument(
            "file", help="PEM, certificate, OpenSSH public key line or JWK file; - for stdin."
        )
        p = add(
            "add-jwks-url",
            help="Take the integration's public keys from an identity provider's JWKS URL "
            "(fetched now, then refreshed every JWKS_REFRESH_SECONDS).",
        )
        p.add_argument("url", help="The https URL of the key set (JWKS).")
        p = add(
            "add-oidc-issuer",
            help="Take the integration's public keys from an OpenID Connect issuer (its "
            "discovery document's jwks_uri); its issuer becomes the integration's.",
        )
        p.add_argument("issuer", help="The issuer URL, e.g. https://login.example.com/realms/main")
        add(
            "refresh-keys",
            help="Fetch the integration's key set now; exit 1 if the fetch fails (the last "
            "good set keeps serving).",
        )
        add(
            "remove-key-source",
            help="Stop taking the integration's keys from its identity provider.",
        )
        p = add("generate-service-keypair", help="Create (or rotate) the service key pair for JWE.")
        self._grace(p)
        p = add(
            "generate-signing-keypair",
            help="Create a site signing key pair (RS256 or ES256) and print its public key: "
            "active if the integration has none, else staged as the next key.",
        )
        self._alg(p, "RS256")
        p = add(
            "rotate-signing-key",
            help="Make the staged signing key pair (or a new one) the one that signs; the "
            "old one keeps a grace period.",
        )
        self._grace(p)
        self._alg(p, None)
        self._rotate_due(
            add(
                "rotate-due",
                help="Rotate every active key older than ROTATION_REMINDER_DAYS, for cron: "
                "site signing key pairs; secrets and service key pairs only when asked. "
                "Exit 0 when nothing is due.",
                integration=False,
            )
        )
        p = add("revoke", help="Stop accepting a key now (any integration's).", integration=False)
        p.identifier_only = True
        p.add_argument("kid", help="The key's kid (see status).")
        p = add(
            "revoke-user",
            help="Refuse every token issued so far for this user id, in the integration's "
            "user space.",
        )
        p.identifier_only = True
        p.add_argument("user_id", help="The user id (sub).")
        p = add(
            "delete-contact",
            help="Delete a contact of the integration's user space and all data tied to it (GDPR).",
        )
        p.identifier_only = True
        p.add_argument("user_id", help="The contact's user id (sub).")
        add(
            "status",
            help="Mode, keys and integrations as JSON (never a secret).",
            integration=False,
        )
        p = add(
            "failures",
            help="The newest refused chat requests, FAILURE_SAMPLES per integration, as JSON, "
            "newest first: why verification fails for a customer (never token material).",
            integration=False,
        )
        p.add_argument(
            "--integration",
            default=None,
            metavar="NAME",
            help="This integration's only (default: every integration's).",
        )
        add(
            "generate-encryption-key",
            help="Print a new random key for CHAT_SECURITY['ENCRYPTION_KEYS'] (changes nothing).",
            integration=False,
        )
        add(
            "reencrypt",
            help="Re-encrypt stored secrets and private keys under the first ENCRYPTION_KEYS "
            "entry; report which configured keys are no longer needed (exit 1 if some "
            "stored key cannot be decrypted).",
            integration=False,
        )
        p = add(
            "integration",
            help="List, add or remove integrations (chat surfaces with their own keys).",
            integration=False,
        )
        self._integration_actions(p)

    @staticmethod
    def _integration_actions(parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)

        def add(name: str, *, help: str) -> ArgumentParser:
            return actions.add_parser(name, help=help, description=help)

        add("list", help="Every integration as JSON: rules, mode, paths, user space, key kids.")
        p = add("add", help="Add an integration and print it as JSON.")
        p.add_argument("name", help="1-50 lower-case letters, digits and hyphens (e.g. ios).")
        p.add_argument("--issuer", default="", metavar="ISS", help="The iss its tokens must carry.")
        p.add_argument(
            "--audience", default="", metavar="AUD", help="A value its tokens' aud must hold."
        )
        p.add_argument(
            "--own-users",
            action="store_true",
            help="Its own user space: contacts, subject binding and user revocations "
            "shared with no other integration.",
        )
        p.add_argument(
            "--path",
            action="append",
            default=[],
            metavar="PREFIX",
            help="An HTTP path prefix it guards; repeat for several.",
        )
        p = add(
            "set",
            help="Change an integration's issuer, audience or paths and print it as JSON "
            "(its keys stay; not default, whose rules are settings; never its user space).",
        )
        p.add_argument("name", help="The integration's name.")
        p.add_argument(
            "--issuer",
            default=None,
            metavar="ISS",
            help="The iss its tokens must carry ('' clears).",
        )
        p.add_argument(
            "--audience",
            default=None,
            metavar="AUD",
            help="A value its tokens' aud must hold ('' clears).",
        )
        paths = p.add_mutually_exclusive_group()
        paths.add_argument(
            "--path",
            action="append",
            default=None,
            metavar="PREFIX",
            help="An HTTP path prefix it guards; repeat for several (replaces the list).",
        )
        paths.add_argument(
            "--no-paths", action="store_true", help="Guard no HTTP path (WebSocket only)."
        )
        p = add(
            "remove",
            help="Remove an integration (refused while it holds usable keys; never default).",
        )
        p.add_argument("name", help="The integration's name.")

    @staticmethod
    def _integration(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--integration",
            default=DEFAULT_INTEGRATION,
            metavar="NAME",
            help=f"The integration to act on (default: {DEFAULT_INTEGRATION}).",
        )

    @staticmethod
    def _grace(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--grace",
            type=str,
            default=None,
            metavar="HOURS",
            help="Hours the previous key stays accepted (default GRACE_PERIOD; 0 = retire now).",
        )

    @classmethod
    def _rotate_due(cls, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--integration",
            default=None,
            metavar="NAME",
            help="Rotate this integration's due keys only (default: every integration's).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would rotate; change nothing.",
        )
        parser.add_argument(
            "--include-secrets",
            action="store_true",
            help="Rotate due signing secrets too, printing each new secret once: the backend "
            "that signs tokens must get it before the grace period ends. Never send this "
            "output to a log.",
        )
        parser.add_argument(
            "--include-service-keys",
            action="store_true",
            help="Rotate due service key pairs too (websites holding a copy of the public "
            "key must get the new one before the grace period ends).",
        )
        cls._grace(parser)

    @staticmethod
    def _alg(parser: ArgumentParser, default: str | None) -> None:
        keep = "" if default else " (default: the staged key's, else the active key's, else RS256)"
        parser.add_argument(
            "--alg",
            choices=keys.SIGNING_ALGORITHMS,
            default=default,
            help=f"RS256 (RSA 2048) or ES256 (EC P-256){keep}.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["subcommand"].replace("-", "_")
        found = (
            *checks.check_settings(),
            *checks.check_stray_settings(),
            *checks.check_middleware(),
        )
        silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))
        errors = [m for m in found if m.is_serious() and m.id not in silenced]
        if errors:
            raise _fail(f"{errors[0].id}: {errors[0].msg} Run 'manage.py check' for details.")
        try:
            named = options.get("integration")
            if named:
                _check_known([named] if isinstance(named, str) else named)
            getattr(self, f"do_{name}")(options)
        except ChatSecurityError as exc:
            raise _fail(str(exc)) from exc
        except DatabaseError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _fail(f"the database cannot be used ({first}); has 'migrate' been run?") from exc

    def emit(self, data: Any) -> None:
        # ASCII-only output: a claim may hold a lone surrogate that no encoder can print.
        self.stdout.write(json.dumps(data, ensure_ascii=True, sort_keys=False))

    def _read(self, arg: str) -> str | bytes:
        if arg != "-":
            return arg
        return _read_stdin()

    # -- subcommands -------------------------------------------------------------

    def do_verify(self, options: dict[str, Any]) -> None:
        token = self._read(options["token"]).strip()
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
        claims = None
        if options["claims"] is not None:
            try:
                claims = json.loads(options["claims"], parse_constant=_no_constant)
            except (ValueError, RecursionError):
                claims = None
            if not isinstance(claims, dict):
                raise _fail("--claims must be a JSON object")
            for name, option in _SET_BY_OPTIONS.items():
                if name in claims:
                    raise _fail(f"--claims must not set {name!r}; use {option}")
        try:
            token = tokens.issue(
                options["sub"], claims, options["ttl"], integration=options["integration"]
            )
        except TokenError as exc:
            # issue() refuses what verify would refuse; only the --sub check names "sub".
            sub = exc.facts.get("claim") == "sub"
            what = "--sub is not a valid user id" if sub else "verify would refuse this token"
            raise _fail(f"{what}: {exc.code}: {exc.detail}") from exc
        self.stdout.write(token)

    def do_security(self, options: dict[str, Any]) -> None:
        name, mode, at = options["integration"], options["mode"], options["at"]
        if at is not None and mode != "on":
            raise _fail(f"--at goes with 'security on', not 'security {mode}'")
        if at is not None:
            SecurityConfig.schedule_on(_moment(at), ACTOR, integration=name)
        elif mode == "cancel":
            SecurityConfig.cancel_schedule(ACTOR, integration=name)
        else:
            SecurityConfig.set_enabled(mode == "on", ACTOR, integration=name)
        integration = Integration.objects.named(name)
        done: dict[str, Any] = {"mode": "on" if integration.secured() else "off"}
        if at is not None or mode == "cancel":  # on/off print what they always printed
            done["enforce_at"] = _iso(integration.scheduled_at())
        self.emit(done)

    def do_generate_secret(self, options: dict[str, Any]) -> None:
        key, secret = Key.objects.generate_secret(ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "secret": secret})
        self._warn_without_encryption_keys()

    def do_rotate_secret(self, options: dict[str, Any]) -> None:
        grace = self._grace_seconds(options)
        key, secret = Key.objects.rotate_secret(grace, ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "secret": secret})
        self._warn_without_encryption_keys()

    def _warn_without_encryption_keys(self) -> None:
        """W001 at the moment it starts to matter: a key was just encrypted with SECRET_KEY."""
        warning = keys.encrypted_with_secret_key_warning()
        if warning:
            self.stderr.write(warning)

    def do_add_public_key(self, options: dict[str, Any]) -> None:
        path = options["file"]
        if path == "-":
            text = _read_stdin()
        else:
            try:
                with open(path, "rb") as fh:
                    text = fh.read(MAX_INPUT + 1)
            except OSError as exc:
                raise _fail(f"cannot read {path}: {exc.strerror}") from exc
        key = Key.objects.add_public_key(text, ACTOR, integration=options["integration"])
        self.emit({"kid": key.kid, "fingerprint": key.fingerprint})

    def do_add_jwks_url(self, options: dict[str, Any]) -> None:
        source = sources.add_jwks_url(options["url"], options["integration"], ACTOR)
        self.emit(_source_status(source))

    def do_add_oidc_issuer(self, options: dict[str, Any]) -> None:
        source = sources.add_oidc_issuer(options["issuer"], options["integration"], ACTOR)
        self.emit(_source_status(source))

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
            ACTOR, self._grace_seconds(options), integration=options["integration"]
        )
        self.emit({"kid": key.kid, "public_key_pem": key.public_pem})
        self._warn_without_encryption_keys()

    def do_generate_signing_keypair(self, options: dict[str, Any]) -> None:
        key = Key.objects.generate_signing_keypair(
            options["alg"], ACTOR, integration=options["integration"]
        )
        self._emit_signing_key(key)

    def do_rotate_signing_key(self, options: dict[str, Any]) -> None:
        grace = self._grace_seconds(options)
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
            grace=self._grace_seconds(options),
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
            raise _fail(f"not a valid user id: {exc.detail}") from exc
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
        by_integration, fetched = _keys_by_integration(), _sources()
        integrations = []
        for i in _integrations():
            listed = [_key_status(k) for k in by_integration.get(i.name, [])]
            source = fetched.get(i.name)
            described = _describe(i)
            if source is not None:
                listed += [{**k, "integration": i.name} for k in source.keys_status()]
                if described["issuer"] is None and source.issuer:
                    described["issuer"] = source.issuer  # the discovered one is enforced
            integrations.append(
                {
                    **described,
                    "enforce_at": _iso(i.scheduled_at()),
                    "keys": listed,
                    "key_source": source.as_status() if source is not None else None,
                }
            )
        default = integrations[0]  # §7's fields: the default integration's, as before §13
        self.emit({"mode": default["mode"], "keys": default["keys"], "integrations": integrations})

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
            by_integration = _keys_by_integration()
            listed = [
                {**_describe(i), "kids": [k.kid for k in by_integration.get(i.name, [])]}
                for i in _integrations()
            ]
            self.emit({"integrations": listed})
        elif action == "add":
            added = Integration.objects.add(
                options["name"],
                issuer=options["issuer"],
                audience=options["audience"],
                own_users=options["own_users"],
                paths=options["path"],
                actor=ACTOR,
            )
            self.emit({**_describe(added), "kids": []})
        elif action == "set":
            changed = Integration.objects.change(
                options["name"],
                issuer=options["issuer"],
                audience=options["audience"],
                paths=[] if options["no_paths"] else options["path"],
                actor=ACTOR,
            )
            kids = Key.objects.filter(integration=changed).values_list("kid", flat=True)
            self.emit({**_describe(changed), "kids": list(kids)})
        else:
            Integration.objects.remove(options["name"], ACTOR)
            self.emit({"name": options["name"], "removed": True})

    @staticmethod
    def _grace_seconds(options: dict[str, Any]) -> float | None:
        if options.get("grace") is None:
            return None
        return _hours(options["grace"]) * 3600
