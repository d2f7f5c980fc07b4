"""``manage.py chat_security <subcommand>``: the admin panel's actions for scripts.

Thin: every subcommand calls the key store or the engine. Results are JSON on
stdout; bad input is a one-line error on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from typing import Any, NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from chat_security import checks, diagnosis, identity, keys, tokens, usage
from chat_security.conf import MAX_GRACE_HOURS
from chat_security.exceptions import ChatSecurityError, TokenError
from chat_security.models import Key, RevokedUser, SecurityConfig

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


class _Parser(CommandParser):
    """Argument errors as one line on stderr with exit code 2 (no usage dump)."""

    #: Set on subcommands whose only argument is an identifier: a kid (an RFC 7638
    #: thumbprint is base64url, so 1 in 64 starts with "-") or a user id may begin
    #: with a dash and must still be taken as the argument, not as an option.
    identifier_only = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if (
            self.identifier_only
            and args
            and args[0].startswith("-")
            and args[0] not in ("-h", "--help", "--")
        ):
            args = ["--", *args]
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            sys.stderr.write(f"chat_security: error: {message}\n")
            sys.exit(2)
        raise CommandError(f"Error: {message}", returncode=2)


class Command(BaseCommand):
    help = "Manage web chat security: keys, the security switch, and token checks."
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

        def add(name: str, *, help: str) -> _Parser:
            """A subcommand whose ``--help`` says what it does, as the command list does."""
            return sub.add_parser(name, help=help, description=help)

        p = add("verify", help="Verify a token; JSON result, exit 0 if valid, 1 if not.")
        p.add_argument("token", help="The token, or - to read it from stdin.")
        p.add_argument(
            "--session-subject",
            default=None,
            metavar="ID",
            help="Check as if a chat session were already bound to this user id "
            "(a different sub gives subject_changed).",
        )
        p = add("issue", help="Sign a token with the active secret and print it.")
        p.add_argument("--sub", required=True, help="User id (the sub claim).")
        p.add_argument("--claims", default=None, help="Extra claims as a JSON object.")
        p.add_argument("--ttl", type=int, default=None, help="Lifetime in seconds (default 3600).")
        p = add("security", help="Turn 'Secure your web chat' on or off.")
        p.add_argument("mode", choices=["on", "off"], help="on: tokens required; off: optional.")
        add("generate-secret", help="Create the first signing secret and print it once.")
        p = add(
            "rotate-secret", help="Replace the active secret; the old one keeps a grace period."
        )
        self._grace(p)
        p = add("add-public-key", help="Register a client's RS256 public key.")
        p.add_argument("file", help="PEM, certificate, ssh-rsa or JWK file; - for stdin.")
        p = add("generate-service-keypair", help="Create (or rotate) the service key pair for JWE.")
        self._grace(p)
        p = add("revoke", help="Stop accepting a key now.")
        p.identifier_only = True
        p.add_argument("kid", help="The key's kid (see status).")
        p = add("revoke-user", help="Refuse every token issued so far for this user id.")
        p.identifier_only = True
        p.add_argument("user_id", help="The user id (sub).")
        p = add("delete-contact", help="Delete a contact and all data tied to it (GDPR).")
        p.identifier_only = True
        p.add_argument("user_id", help="The contact's user id (sub).")
        add("status", help="Mode and keys as JSON (never a secret).")
        add(
            "generate-encryption-key",
            help="Print a new random key for CHAT_SECURITY['ENCRYPTION_KEYS'] (changes nothing).",
        )
        add(
            "reencrypt",
            help="Re-encrypt stored secrets and private keys under the first ENCRYPTION_KEYS "
            "entry; report which configured keys are no longer needed (exit 1 if some "
            "stored key cannot be decrypted).",
        )

    @staticmethod
    def _grace(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--grace",
            type=str,
            default=None,
            help="Hours the previous key stays accepted (default GRACE_PERIOD; 0 = retire now).",
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
        try:
            result = tokens.verify(
                token, session_subject=options.get("session_subject"), count_use=False
            )
        except TokenError as exc:
            hints = diagnosis.explain_failure(exc, token).hints  # the admin tester's hints
            self.emit({"valid": False, "error": exc.code, "detail": exc.detail, "hints": hints})
            raise SystemExit(1) from None
        self.emit(
            {
                "valid": True,
                "header": result.header,
                "claims": result.claims,
                "kid": result.kid,
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
            self.stdout.write(tokens.issue(options["sub"], claims, options["ttl"]))
        except TokenError as exc:
            # issue() refuses what verify would refuse; only the --sub check names "sub".
            sub = exc.facts.get("claim") == "sub"
            what = "--sub is not a valid user id" if sub else "verify would refuse this token"
            raise _fail(f"{what}: {exc.code}: {exc.detail}") from exc

    def do_security(self, options: dict[str, Any]) -> None:
        config = SecurityConfig.set_enabled(options["mode"] == "on", ACTOR)
        self.emit({"mode": "on" if config.enabled else "off"})

    def do_generate_secret(self, options: dict[str, Any]) -> None:
        key, secret = Key.objects.generate_secret(ACTOR)
        self.emit({"kid": key.kid, "secret": secret})
        self._warn_without_encryption_keys()

    def do_rotate_secret(self, options: dict[str, Any]) -> None:
        grace = self._grace_seconds(options)
        key, secret = Key.objects.rotate_secret(grace, ACTOR)
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
        key = Key.objects.add_public_key(text, ACTOR)
        self.emit({"kid": key.kid, "fingerprint": key.fingerprint})

    def do_generate_service_keypair(self, options: dict[str, Any]) -> None:
        key = Key.objects.generate_service_keypair(ACTOR, self._grace_seconds(options))
        self.emit({"kid": key.kid, "public_key_pem": key.public_pem})
        self._warn_without_encryption_keys()

    def do_revoke(self, options: dict[str, Any]) -> None:
        key = Key.objects.revoke(options["kid"], ACTOR)
        self.emit({"kid": key.kid, "state": key.state()})

    def do_revoke_user(self, options: dict[str, Any]) -> None:
        try:
            user_id = tokens.user_id_of({"sub": options["user_id"]})
        except TokenError as exc:
            raise _fail(f"not a valid user id: {exc.detail}") from exc
        revoked = RevokedUser.objects.revoke(user_id, ACTOR)
        self.emit({"user_id": user_id, "revoked_at": revoked.revoked_at.isoformat()})

    def do_delete_contact(self, options: dict[str, Any]) -> None:
        self.emit(identity.delete_contact(options["user_id"], ACTOR))

    def do_status(self, options: dict[str, Any]) -> None:
        usage.flush_usage()
        config = SecurityConfig.objects.filter(pk=1).first()
        enabled = config.enabled if config else True
        self.emit(
            {
                "mode": "on" if enabled else "off",
                "keys": [k.as_status() for k in Key.objects.all()],
            }
        )

    def do_generate_encryption_key(self, options: dict[str, Any]) -> None:
        self.stdout.write(keys.generate_encryption_key())

    def do_reencrypt(self, options: dict[str, Any]) -> None:
        result = Key.objects.reencrypt(ACTOR)
        self.emit(result)
        if result["unreadable"]:
            raise SystemExit(1)

    @staticmethod
    def _grace_seconds(options: dict[str, Any]) -> float | None:
        if options.get("grace") is None:
            return None
        return _hours(options["grace"]) * 3600
