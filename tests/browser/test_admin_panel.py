"""A real headless Chromium drives the Developer – WebChat panel as an admin.

Each step is saved as artifacts/screenshots/admin-<step>.png. Chromium and
the page come from tests/browser/conftest.py (system Chromium; a missing
browser fails the run, never skips it).
"""

from __future__ import annotations

import re
import time

import jwt
import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

from chat_security.models import AuditEntry, Integration, Key, KeyKind, RevokedUser
from tests import tokencraft as tc
from tests.browser.conftest import SCREENSHOTS, save_screenshot
from tests.chat_helpers import stored_secret

PANEL = "/admin/chat_security/securityconfig/"
REVOKED = "/admin/chat_security/revokeduser/"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def panel_page(page: Page) -> Page:
    """The shared conftest's page, sized for the admin, nav sidebar collapsed.

    The sidebar is sticky, so in full-page screenshots it would float mid-page.
    """
    page.set_viewport_size({"width": 1280, "height": 900})
    page.context.add_init_script(
        "window.localStorage.setItem('django.admin.navSidebarIsOpen', 'false')"
    )
    return page


def shot(page: Page, step: str, section: str = "") -> None:
    """admin-<step>.png: the full page, or one panel section (the tester is far down)."""
    if section:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator(section).screenshot(path=str(SCREENSHOTS / f"admin-{step}.png"))
    else:
        save_screenshot(page, f"admin-{step}")


def make_user(username: str, codename: str) -> None:
    user = User.objects.create_user(username, f"{username}@example.com", "pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename=codename))


def login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next={PANEL}")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    expect(page.locator("h1")).to_have_text("Developer – WebChat")


def verify_token(page: Page, token: str) -> None:
    page.fill("#id_token", token)
    page.click("#test-token input[type=submit]")
    expect(page.locator("#token-result")).to_be_visible()


def claims(**extra: int | str) -> dict:
    now = int(time.time())
    return {"sub": "customer-42", "iat": now - 180, "exp": now + 42 * 60, **extra}


def test_admin_manages_keys_and_tests_tokens(live_server, panel_page: Page):
    page = panel_page
    base = live_server.url
    make_user("ada", "manage_keys")
    login(page, base, "ada")
    shot(page, "01-panel-empty")

    page.goto(f"{base}/admin/")
    index_link = page.locator(f'#content-main th a[href="{PANEL}"]')
    expect(index_link).to_be_visible()
    shot(page, "00-admin-index")
    index_link.click()

    # Generate: the secret is on this page only, with a warning and a copy button.
    page.click("input[value='Generate Secret']")
    expect(page.locator(".chat-warning")).to_contain_text("shown only this once")
    expect(page.locator("button.chat-copy")).to_be_visible()  # JS revealed it
    first_secret = page.input_value("#new-secret")
    first = Key.objects.get(kind=KeyKind.SECRET)
    assert stored_secret(first) == first_secret
    shot(page, "02-secret-generated")
    page.click("text=back to Developer – WebChat")
    expect(page.locator("#secrets")).to_contain_text(first_secret[:6] + "…")
    assert first_secret not in page.content()

    # Rotate with the default grace: the new secret, and until when the old one works.
    expect(page.locator("#id_grace_hours")).to_have_value("48")
    page.click("input[value='Rotate Secret']")
    expect(page.locator(".chat-previous")).to_contain_text(f"{first.kid} is still accepted until")
    second_secret = page.input_value("#new-secret")
    assert second_secret != first_secret
    shot(page, "03-secret-rotated")
    page.click("text=back to Developer – WebChat")
    expect(page.locator(f"#secrets tr:has-text('{first.kid}') .chat-badge")).to_have_text(
        "in grace"
    )

    # Revoke the old secret now: confirmation first.
    page.locator(f"#secrets tr:has-text('{first.kid}') button.chat-danger").click()
    expect(page.locator("h1")).to_contain_text(f"Revoke signing secret (HS256) {first.kid}?")
    shot(page, "04-revoke-confirm")
    page.click("input[value='Yes, revoke it now']")
    expect(page.locator("ul.messagelist")).to_contain_text(f"Key {first.kid} was revoked.")
    expect(page.locator(f"#secrets tr:has-text('{first.kid}') .chat-badge")).to_have_text("revoked")
    shot(page, "05-revoked")

    # Paste a client public key; a private key is refused inline and not stored.
    private = tc.rsa_key(3)
    page.fill("#id_public_key", tc.private_pem(private))
    page.click("input[value='Add public key']")
    expect(page.locator("#public-keys .errorlist")).to_contain_text("This is a private key")
    assert page.input_value("#id_public_key") == ""
    assert not Key.objects.filter(kind=KeyKind.PUBLIC_KEY).exists()
    shot(page, "06-private-key-refused")
    page.fill("#id_public_key", tc.public_pem(private))
    page.fill("#id_kid", "shop-2027")
    page.click("input[value='Add public key']")
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Public key shop-2027 added (2048 bits)."
    )
    expect(page.locator("#public-keys table")).to_contain_text("shop-2027")
    shot(page, "07-public-key-added")

    # Test tokens: valid, expired, wrong secret, old (revoked) secret, garbage.
    verify_token(page, tc.hs256(second_secret, claims()))
    result = page.locator("#token-result")
    expect(result).to_contain_text("Valid token")
    expect(result).to_contain_text("expires in 42 min")
    expect(result).to_contain_text("issued 3 min ago")
    expect(result).to_contain_text("customer-42")
    shot(page, "08-token-valid", "#test-token")

    verify_token(
        page,
        jwt.encode(
            claims(kid="x"),
            tc.private_pem(private),
            algorithm="RS256",
            headers={"kid": "shop-2027"},
        ),
    )
    expect(result).to_contain_text("Valid token")
    expect(result).to_contain_text("public key shop-2027")

    now = int(time.time())
    verify_token(page, tc.hs256(second_secret, claims(iat=now - 4 * 3600, exp=now - 3 * 3600)))
    expect(result.locator(".chat-code")).to_have_text("expired")
    expect(result).to_contain_text("Expired 3 h ago at")
    expect(result).to_contain_text("issue a new token; recommended lifetime 1 h")
    shot(page, "09-token-expired", "#test-token")

    verify_token(page, tc.hs256("not-our-secret-at-all", claims()))
    expect(result.locator(".chat-code")).to_have_text("invalid_signature")
    expect(result).to_contain_text("The signature matches no key known here")
    shot(page, "10-token-wrong-secret", "#test-token")

    verify_token(page, tc.hs256(first_secret, claims()))
    expect(result.locator(".chat-code")).to_have_text("invalid_signature")
    expect(result).to_contain_text(f"Signed with signing secret {first.kid}, revoked since")
    shot(page, "11-token-old-secret", "#test-token")

    verify_token(page, "this is not a token")
    expect(result.locator(".chat-code")).to_have_text("malformed")
    expect(result).to_contain_text("The input could not be decoded")
    shot(page, "12-token-garbage", "#test-token")

    # The tester records outcomes only.
    outcomes = list(
        AuditEntry.objects.filter(action="test_token")
        .order_by("at")
        .values_list("detail", flat=True)
    )
    assert outcomes == [
        "valid",
        "valid",
        "expired",
        "invalid_signature",
        "invalid_signature",
        "malformed",
    ]

    # Switch security off: a confirmation that names the consequence.
    page.click("input[value='Switch security off…']")
    expect(page.locator(".chat-warning")).to_contain_text("Anonymous access becomes possible")
    shot(page, "13-security-off-confirm")
    page.click("input[value='Yes, switch security off']")
    expect(page.locator("ul.messagelist")).to_contain_text("Web chat security is now off.")

    # The admin's dark theme applies to the panel as well.
    page.emulate_media(color_scheme="dark")
    page.reload()
    background = page.evaluate(
        "getComputedStyle(document.querySelector('#content')).backgroundColor"
        " || getComputedStyle(document.body).backgroundColor"
    )
    assert background != "rgb(255, 255, 255)"
    shot(page, "14-dark-mode")
    assert first_secret not in page.content() and second_secret not in page.content()


def test_support_staff_see_only_the_tester(live_server, panel_page: Page):
    page = panel_page
    make_user("sam", "test_tokens")
    Key.objects.generate_secret("setup")
    login(page, live_server.url, "sam")
    expect(page.locator("#test-token")).to_be_visible()
    assert page.locator("#secrets, #public-keys, #service-keys, #security, #audit").count() == 0
    verify_token(page, "abc.def")
    expect(page.locator("#token-result .chat-code")).to_have_text("malformed")
    shot(page, "15-support-tester", "#test-token")
    # "Revoked users" (a read-only list) is the one link; no action is offered.
    assert re.search(r"Rotate|Revoke\b|Generate", page.inner_text("#content")) is None
    RevokedUser.objects.revoke("customer-7", "cli")
    page.click(f'.object-tools a[href="{REVOKED}"]')
    expect(page.locator("#result_list")).to_contain_text("customer-7")
    assert page.locator("text=Revoke a user…").count() == 0


def test_admin_revokes_a_user(live_server, panel_page: Page):
    page = panel_page
    base = live_server.url
    make_user("ada", "manage_keys")
    _key, secret = Key.objects.generate_secret("setup")
    before = tc.hs256(secret, claims())
    login(page, base, "ada")
    verify_token(page, before)
    expect(page.locator("#token-result")).to_contain_text("Valid token")

    # The engine's user-id rule, inline: a leading space is not the same user.
    page.fill("#id_user_id", " customer-42")
    page.click("input[value='Revoke user…']")
    expect(page.locator("#revoke-user .errorlist")).to_contain_text("leading or trailing")
    assert not RevokedUser.objects.exists()

    # Confirmation first: what is refused from now on, and what is not.
    page.fill("#id_user_id", "customer-42")
    page.click("input[value='Revoke user…']")
    expect(page.locator("h1")).to_have_text("Revoke user customer-42?")
    expect(page.locator(".breadcrumbs")).to_contain_text("Developer – WebChat › Revoke a user")
    expect(page.locator(".chat-warning")).to_contain_text("without iat is refused too")
    assert not RevokedUser.objects.exists()
    shot(page, "16-revoke-user-confirm")
    page.click("input[value='Yes, revoke this user now']")
    message = page.locator("ul.messagelist")
    expect(message).to_contain_text("User customer-42 is revoked.")
    expect(message).to_contain_text("and so is every token of this user without iat")
    expect(page.locator("#revoke-user table")).to_contain_text("customer-42")
    assert AuditEntry.objects.filter(action="revoke_user", detail="customer-42").exists()

    # The tester now refuses the token it accepted a minute ago.
    verify_token(page, before)
    expect(page.locator("#token-result .chat-code")).to_have_text("token_revoked")
    shot(page, "17-user-revoked")

    # The read-only list, reached from the panel.
    page.click(f'.object-tools a[href="{REVOKED}"]')
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text("customer-42")
    expect(page.locator("#result_list")).to_contain_text("ada")
    shot(page, "18-revoked-users")
    page.click("text=Revoke a user…")
    expect(page.locator("#id_user_id")).to_be_visible()


def test_admin_adds_an_integration_and_tests_its_token(live_server, panel_page: Page):
    """SPEC §13: a second chat surface with its own issuer, secret, switch and tester verdict."""
    page = panel_page
    make_user("ada", "manage_keys")
    login(page, live_server.url, "ada")

    page.fill("#id_integration_name", "ios")
    page.fill("#id_integration_issuer", "https://ios.example")
    page.check("#id_integration_own_users")
    page.fill("#id_integration_paths", "/ios/chat/api/")
    page.click("input[value='Add integration']")
    expect(page.locator("ul.messagelist")).to_contain_text("Integration ios added")
    ios = page.locator("#integration-ios")
    facts = ios.locator(".chat-integration-facts")
    expect(facts).to_contain_text("https://ios.example")
    expect(facts).to_contain_text("/ios/chat/api/")
    expect(facts).to_contain_text("own users")
    shot(page, "19-integration-added")

    # Its own secret, shown once; the token is signed here, as the app's backend would.
    ios.locator("input[value='Generate Secret']").click()
    expect(page.locator(".chat-warning")).to_contain_text("shown only this once")
    expect(page.locator("#new-secret-integration")).to_have_text("ios")
    secret = page.input_value("#new-secret")
    kid = page.inner_text("#new-secret-kid")
    assert Key.objects.get(kid=kid).integration.name == "ios"
    shot(page, "20-integration-secret")
    page.click("text=back to Developer – WebChat")
    expect(page.locator("#integration-ios-secrets table")).to_contain_text(kid)

    now = int(time.time())
    token = jwt.encode(
        {"sub": "ios-user-1", "iss": "https://ios.example", "iat": now, "exp": now + 600},
        secret,
        algorithm="HS256",
        headers={"kid": kid},
    )
    expect(page.locator("#id_integration")).to_have_value("")  # the iss picks
    verify_token(page, token)
    result = page.locator("#token-result")
    expect(result).to_contain_text("Valid token")
    expect(result.locator(".chat-judged-by")).to_have_text("ios")
    expect(result.locator(".chat-signer-integration")).to_have_text("of integration ios")
    shot(page, "21-integration-token-valid", "#test-token")

    # Its switch is its own: off for ios, default stays on.
    ios.locator("input[value='Switch security off…']").click()
    expect(page.locator("h1")).to_have_text("Switch web chat security off for ios?")
    page.click("input[value='Yes, switch security off']")
    expect(page.locator("ul.messagelist")).to_contain_text("Web chat security for ios is now off.")
    expect(page.locator("#integration-ios-security .chat-badge")).to_have_text("Off")
    expect(page.locator("#security .chat-badge")).to_have_text("On")
    assert Integration.objects.get(name="ios").enabled is False
    shot(page, "22-integration-switched-off", "#integration-ios-security")
