"""The arguments of ``manage.py chat_security``: every subcommand, its options and
their help, in the order ``--help`` lists them; argument errors as one line.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any, NoReturn

from django.core.management.base import CommandError, CommandParser

from chat_security import keys
from chat_security.integrations import DEFAULT_INTEGRATION


class CliParser(CommandParser):
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


class _Subcommands:
    """A parser's subcommands (``dest`` names the one chosen), each a :class:`CliParser`."""

    def __init__(self, parser: ArgumentParser, dest: str) -> None:
        self._action = parser.add_subparsers(dest=dest, required=True, parser_class=CliParser)

    def add(self, name: str, *, help: str, integration: bool = True) -> CliParser:
        """A subcommand whose ``--help`` says what it does, as the command list does;
        with ``--integration NAME`` unless told otherwise."""
        p: CliParser = self._action.add_parser(name, help=help, description=help)
        if integration:
            _integration(p)
        return p


def add_subcommands(parser: ArgumentParser) -> None:
    """Every subcommand, in the order ``--help`` lists them."""
    sub = _Subcommands(parser, "subcommand")
    _add_token_subcommands(sub)
    _add_secret_subcommands(sub)
    _add_key_source_subcommands(sub)
    _add_key_pair_subcommands(sub)
    _add_revocation_subcommands(sub)
    _add_report_subcommands(sub)
    p = sub.add(
        "integration",
        help="List, add or remove integrations (chat surfaces with their own keys).",
        integration=False,
    )
    _integration_actions(p)


def _add_token_subcommands(sub: _Subcommands) -> None:
    """``verify``, ``issue`` and the switch that makes tokens required."""
    p = sub.add(
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
    p = sub.add(
        "issue",
        help="Sign a token with the integration's active signing key pair, else its "
        "active secret, and print it.",
    )
    p.add_argument("--sub", required=True, help="User id (the sub claim).")
    p.add_argument("--claims", default=None, help="Extra claims as a JSON object.")
    p.add_argument("--ttl", type=int, default=None, help="Lifetime in seconds (default 3600).")
    p = sub.add(
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


def _add_secret_subcommands(sub: _Subcommands) -> None:
    """Shared secrets and client public keys, stored here."""
    sub.add("generate-secret", help="Create the first signing secret and print it once.")
    p = sub.add(
        "rotate-secret", help="Replace the active secret; the old one keeps a grace period."
    )
    _grace(p)
    p = sub.add(
        "add-public-key",
        help="Register a client's public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).",
    )
    p.add_argument(
        "file", help="PEM, certificate, OpenSSH public key line or JWK file; - for stdin."
    )


def _add_key_source_subcommands(sub: _Subcommands) -> None:
    """Public keys fetched from an identity provider."""
    p = sub.add(
        "add-jwks-url",
        help="Take the integration's public keys from an identity provider's JWKS URL "
        "(fetched now, then refreshed every JWKS_REFRESH_SECONDS).",
    )
    p.add_argument("url", help="The https URL of the key set (JWKS).")
    p = sub.add(
        "add-oidc-issuer",
        help="Take the integration's public keys from an OpenID Connect issuer (its "
        "discovery document's jwks_uri); its issuer becomes the integration's.",
    )
    p.add_argument("issuer", help="The issuer URL, e.g. https://login.example.com/realms/main")
    sub.add(
        "refresh-keys",
        help="Fetch the integration's key set now; exit 1 if the fetch fails (the last "
        "good set keeps serving).",
    )
    sub.add(
        "remove-key-source",
        help="Stop taking the integration's keys from its identity provider.",
    )


def _add_key_pair_subcommands(sub: _Subcommands) -> None:
    """The site's own key pairs, and rotation of whatever is due."""
    p = sub.add("generate-service-keypair", help="Create (or rotate) the service key pair for JWE.")
    _grace(p)
    p = sub.add(
        "generate-signing-keypair",
        help="Create a site signing key pair (RS256 or ES256) and print its public key: "
        "active if the integration has none, else staged as the next key.",
    )
    _alg(p, "RS256")
    p = sub.add(
        "rotate-signing-key",
        help="Make the staged signing key pair (or a new one) the one that signs; the "
        "old one keeps a grace period.",
    )
    _grace(p)
    _alg(p, None)
    _rotate_due(
        sub.add(
            "rotate-due",
            help="Rotate every active key older than ROTATION_REMINDER_DAYS, for cron: "
            "site signing key pairs; secrets and service key pairs only when asked. "
            "Exit 0 when nothing is due.",
            integration=False,
        )
    )


def _add_revocation_subcommands(sub: _Subcommands) -> None:
    """Subcommands whose one argument is a kid or a user id, dash or not."""
    p = sub.add("revoke", help="Stop accepting a key now (any integration's).", integration=False)
    p.identifier_only = True
    p.add_argument("kid", help="The key's kid (see status).")
    p = sub.add(
        "revoke-user",
        help="Refuse every token issued so far for this user id, in the integration's user space.",
    )
    p.identifier_only = True
    p.add_argument("user_id", help="The user id (sub).")
    p = sub.add(
        "delete-contact",
        help="Delete a contact of the integration's user space and all data tied to it (GDPR).",
    )
    p.identifier_only = True
    p.add_argument("user_id", help="The contact's user id (sub).")


def _add_report_subcommands(sub: _Subcommands) -> None:
    """What is configured and what fails, and the encryption of stored keys."""
    sub.add(
        "status",
        help="Mode, keys and integrations as JSON (never a secret).",
        integration=False,
    )
    p = sub.add(
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
    sub.add(
        "generate-encryption-key",
        help="Print a new random key for CHAT_SECURITY['ENCRYPTION_KEYS'] (changes nothing).",
        integration=False,
    )
    sub.add(
        "reencrypt",
        help="Re-encrypt stored secrets and private keys under the first ENCRYPTION_KEYS "
        "entry; report which configured keys are no longer needed (exit 1 if some "
        "stored key cannot be decrypted).",
        integration=False,
    )


def _integration_actions(parser: ArgumentParser) -> None:
    """``integration list|add|set|remove``."""
    actions = _Subcommands(parser, "action")
    actions.add(
        "list",
        help="Every integration as JSON: rules, mode, paths, user space, key kids.",
        integration=False,
    )
    p = actions.add("add", help="Add an integration and print it as JSON.", integration=False)
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
    _integration_set(
        actions.add(
            "set",
            help="Change an integration's issuer, audience or paths and print it as JSON "
            "(its keys stay; not default, whose rules are settings; never its user space).",
            integration=False,
        )
    )
    p = actions.add(
        "remove",
        help="Remove an integration (refused while it holds usable keys; never default).",
        integration=False,
    )
    p.add_argument("name", help="The integration's name.")


def _integration_set(parser: ArgumentParser) -> None:
    parser.add_argument("name", help="The integration's name.")
    parser.add_argument(
        "--issuer",
        default=None,
        metavar="ISS",
        help="The iss its tokens must carry ('' clears).",
    )
    parser.add_argument(
        "--audience",
        default=None,
        metavar="AUD",
        help="A value its tokens' aud must hold ('' clears).",
    )
    paths = parser.add_mutually_exclusive_group()
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


def _integration(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--integration",
        default=DEFAULT_INTEGRATION,
        metavar="NAME",
        help=f"The integration to act on (default: {DEFAULT_INTEGRATION}).",
    )


def _grace(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--grace",
        type=str,
        default=None,
        metavar="HOURS",
        help="Hours the previous key stays accepted (default GRACE_PERIOD; 0 = retire now).",
    )


def _rotate_due(parser: ArgumentParser) -> None:
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
    _grace(parser)


def _alg(parser: ArgumentParser, default: str | None) -> None:
    keep = "" if default else " (default: the staged key's, else the active key's, else RS256)"
    parser.add_argument(
        "--alg",
        choices=keys.SIGNING_ALGORITHMS,
        default=default,
        help=f"RS256 (RSA 2048) or ES256 (EC P-256){keep}.",
    )
