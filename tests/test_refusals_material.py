"""Recent failures keep no token material (SPEC §15, issue 20 item 3).

Refused requests carry tokens of every shape, over HTTP and WebSocket: a
well-formed JWS with a wrong signature, an expired one, a JWE, garbage, one
too large to parse, odd Unicode, and tokens whose kid or iss is itself a
token, or that sit in the path. Then every field of the FailureSample table,
the panel as support staff and key managers see it, and the CLI's output are
searched for any piece of any of them: each dot-separated segment, and every
run of 16 characters.
"""

from __future__ import annotations

import io
import secrets

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.test import Client

from chat_security import refusals, usage
from chat_security.models import FailureSample
from tests import chat_helpers
from tests.chat_helpers import bearer, sign
from tests.test_admin_permissions import BASE, client_for
from tests.tokencraft import b64, hs256, segment
from tests.ws_helpers import expect_close, guarded, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.chat_urls")]
secret, token_for = chat_helpers.secret, chat_helpers.token_for

WHOAMI = "/chat/api/whoami"
WRONG = "wrong-secret-" + "x" * 32
RUN = 16


def shapes(secret: tuple, now: int) -> dict[str, str]:
    """A token of every shape, by name; the first ones are nested in the later ones."""
    key, value = secret
    claims = {"sub": "u-1", "iss": "https://shop.example", "exp": now + 60}
    forged = sign(WRONG, claims, kid=key.kid)
    inner = sign(WRONG, {**claims, "sub": "inner"}, kid=key.kid)
    jwe_header = segment({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": key.kid})
    return {
        "forged": forged,
        "expired": sign(value, {**claims, "exp": now - 3600}, kid=key.kid),
        "jwe": ".".join([jwe_header, *(b64(secrets.token_bytes(n)) for n in (256, 12, 80, 16))]),
        "garbage": secrets.token_urlsafe(60),
        "huge": sign(WRONG, {**claims, "pad": secrets.token_urlsafe(9000)}, kid=key.kid),
        "unicode": forged.replace(".", "\u2024", 1) + "ключ🔑" + secrets.token_urlsafe(20),
        "unicode_claims": hs256(WRONG, {**claims, "name": "Zoë \u202e ✓"}, kid="ключ-🔑"),
        "inner": inner,
        "kid_is_token": hs256(WRONG, claims, kid=inner),
        "iss_is_token": sign(WRONG, {**claims, "iss": inner}, kid=key.kid),
        "kid_holds_token": hs256(WRONG, claims, kid="key " + inner),
        "iss_holds_payload": sign(WRONG, {**claims, "iss": inner.split(".")[1]}, kid=key.kid),
    }


def fragments(token: str) -> set[str]:
    """What would give a token away: its segments, and every run of RUN characters."""
    found = {s for s in token.replace("\u2024", ".").split(".") if len(s) >= 8}
    return found | runs(token)


def runs(text: str) -> set[str]:
    return {text[i : i + RUN] for i in range(len(text) - RUN + 1)}


def leaks(tokens: dict[str, str], text: str) -> list[tuple[str, str]]:
    """(token name, fragment) of every fragment found in ``text``."""
    present = runs(text)
    return [
        (name, fragment)
        for name, token in tokens.items()
        for fragment in fragments(token)
        if fragment in present or (len(fragment) < RUN and fragment in text)
    ]


def table_text() -> str:
    fields = [f.name for f in FailureSample._meta.get_fields()]
    return "\n".join(str(v) for row in FailureSample.objects.values_list(*fields) for v in row)


def cli_text() -> str:
    out = io.StringIO()
    call_command("chat_security", "failures", stdout=out)
    return out.getvalue()


def assert_no_token_material(tokens: dict[str, str], codes: set[str]) -> None:
    """Flush, then search the table, the panel (both roles) and the CLI."""
    assert usage.flush_usage() is True
    kept = set(FailureSample.objects.values_list("code", flat=True))
    assert codes <= kept, kept  # the refusals are there to be searched
    pages = [client_for(role).get(BASE).content.decode() for role in ("support", "admin")]
    cli = cli_text()
    for text in (table_text(), *pages, cli):
        assert leaks(tokens, text) == []
    for page in pages:
        assert refusals.HIDDEN in page and "invalid_signature" in page
    assert refusals.HIDDEN in cli
    # The search finds what is there: a planted piece of a token is reported.
    assert leaks(tokens, table_text() + tokens["forged"][40:57]) != []


def test_http_refusals_keep_no_token_material(secret, clock):
    tokens = shapes(secret, int(clock.t))
    client = Client()
    for name, token in tokens.items():
        response = client.get(WHOAMI, headers={**bearer(token), "User-Agent": "curl/8"})
        assert response.status_code == 401, name
    # In the path, and in the query string (which is never kept).
    response = client.get(f"/chat/api/{tokens['forged']}/send?token={tokens['expired']}")
    assert response.status_code == 401
    codes = {"invalid_signature", "expired", "malformed", "token_too_large", "missing_token"}
    assert_no_token_material(tokens, codes)
    rows = FailureSample.objects.all()
    assert rows.filter(kid=refusals.HIDDEN).count() == 2  # kid_is_token, kid_holds_token
    assert rows.filter(iss=refusals.HIDDEN).count() == 2  # iss_is_token, iss_holds_payload
    assert rows.filter(path="/chat/api/[token hidden]/send").count() == 1


async def test_socket_refusals_keep_no_token_material(secret, clock):
    tokens = await database_sync_to_async(shapes)(secret, int(clock.t))
    for name, token in tokens.items():
        via = "identify" if not token.isascii() or len(token) > 4000 else "subprotocol"
        comm = await open_socket(guarded(), token, via=via)
        error = await comm.receive_json_from(3)
        assert error["type"] == "error", name
        await comm.wait(3)
    comm = await open_socket(guarded(), None, path=f"/ws/echo/?token={tokens['forged']}")
    await expect_close(comm, 4401, "malformed")
    codes = {"invalid_signature", "expired", "malformed", "token_too_large"}
    await database_sync_to_async(assert_no_token_material)(tokens, codes)
