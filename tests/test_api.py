"""The public Python API: ``from chat_security import verify, issue, …`` (issue 9, item 6)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory

import chat_security
from chat_security.models import Contact, Key, SecurityConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", chat_security.__all__)
def test_every_public_name_resolves_to_its_module(name):
    value = getattr(chat_security, name)
    module = importlib.import_module(f"chat_security.{chat_security._EXPORTS[name]}")
    assert value is getattr(module, name)


def test_all_and_the_lazy_table_agree():
    assert sorted(chat_security.__all__) == sorted(chat_security._EXPORTS)
    assert len(set(chat_security.__all__)) == len(chat_security.__all__)


def test_type_checkers_see_every_public_name_where_it_is_defined():
    tree = ast.parse((ROOT / "chat_security" / "__init__.py").read_text("utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    seen = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == chat_security._EXPORTS


def test_dir_lists_the_public_names():
    listed = dir(chat_security)
    assert set(chat_security.__all__) <= set(listed)
    assert listed == sorted(listed)
    assert "__version__" in listed


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'ANON_PREFIX'"):
        chat_security.ANON_PREFIX  # noqa: B018
    assert not hasattr(chat_security, "not_a_name")
    with pytest.raises(ImportError):
        from chat_security import not_a_name  # noqa: F401


def test_submodules_still_import_through_the_package():
    from chat_security import keyring

    assert keyring.__name__ == "chat_security.keyring"


def test_the_package_imports_without_settings_and_loads_names_on_use():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, chat_security\n"
        "assert 'verify' in dir(chat_security) and chat_security.__version__\n"
        "assert chat_security.ERROR_CODES['expired']\n"  # exceptions need no settings
        "assert 'chat_security.exceptions' in sys.modules\n"
        "assert 'chat_security.models' not in sys.modules\n"
        "assert 'chat_security.tokens' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# -- the new entry points --------------------------------------------------------------


@pytest.mark.django_db
def test_security_enabled_follows_the_switch(clock):
    assert chat_security.security_enabled() is True
    SecurityConfig.set_enabled(False, "t")
    assert chat_security.security_enabled() is False


def test_security_enabled_raises_when_the_store_cannot_be_read(monkeypatch):
    from chat_security import keyring

    def broken() -> None:
        raise chat_security.KeyStoreUnavailable("down")

    monkeypatch.setattr(keyring, "get_snapshot", broken)
    with pytest.raises(chat_security.KeyStoreUnavailable):
        chat_security.security_enabled()


@pytest.mark.django_db
def test_verify_and_issue_round_trip(clock):
    Key.objects.generate_secret("t")
    result = chat_security.verify(chat_security.issue("api-user"))
    assert isinstance(result, chat_security.VerifiedToken)
    assert result.user_id == "api-user"
    with pytest.raises(chat_security.TokenError) as caught:
        chat_security.verify("")
    assert caught.value.code == "missing_token"
    assert caught.value.code in chat_security.ERROR_CODES


@pytest.mark.django_db
def test_find_contact_looks_without_creating(clock, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": True}
    assert chat_security.find_contact("u-1") is None
    verified = chat_security.contact_for(chat_security.ChatIdentity(user_id="u-1"))
    anonymous = chat_security.contact_for(chat_security.ChatIdentity.anonymous_visitor("anon-abc"))
    assert chat_security.find_contact("u-1") == verified
    assert chat_security.find_contact("anon-abc", anonymous=True) == anonymous
    # A verified lookup never returns an anonymous visitor's contact, and the reverse.
    assert chat_security.find_contact(anonymous.user_id) is None
    assert chat_security.find_contact("u-1", anonymous=True) is None
    assert chat_security.find_contact("") is None
    assert Contact.objects.count() == 2


def test_forget_anonymous_id_expires_the_cookie(settings):
    from django.http import HttpResponse

    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_COOKIE_NAME": "who"}
    response = HttpResponse()
    chat_security.forget_anonymous_id(response)
    cookie = response.cookies["who"]
    assert cookie.value == "" and cookie["max-age"] == 0 and cookie["samesite"] == "Lax"


def test_end_chat_session_without_a_session_is_false():
    assert chat_security.end_chat_session(RequestFactory().get("/")) is False
