"""What a request leaves for its response (``chat_security.marks``), finished directly.

The middleware and the tag drive these through the client in
``test_middleware.py`` and ``test_templatetags.py``; here ``finish`` meets
responses a view has already shaped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

import chat_security
from chat_security import marks


@pytest.fixture
def request_():
    return RequestFactory().get("/page/")


def test_a_marked_page_ends_private_whatever_the_view_set(request_):
    marks.mark_private(request_)
    response = HttpResponse()
    response["Cache-Control"] = "public, max-age=60, s-maxage=600"
    marks.finish(request_, response, protected=False)
    assert response["Cache-Control"] == "private, max-age=60"
    assert request_._cache_update_cache is False
    assert marks.is_finished(request_)


def test_an_unmarked_page_is_left_alone(request_):
    response = HttpResponse()
    response["Cache-Control"] = "public, max-age=60"
    marks.finish(request_, response, protected=False)
    assert response["Cache-Control"] == "public, max-age=60"
    assert not response.has_header("Vary") and not response.cookies
    assert marks.is_finished(request_)


def test_a_protected_response_varies_on_authorization_beside_the_views_vary(request_):
    for vary, expected in ((None, "Authorization"), ("Cookie", "Cookie, Authorization")):
        response = HttpResponse()
        if vary:
            response["Vary"] = vary
        marks.finish(request_, response, protected=True)
        assert response["Vary"] == expected
        assert response["Cache-Control"] == "private"


def test_a_new_anonymous_id_is_set_unless_the_view_decided(request_, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": True}
    new_id = marks.anonymous_id_for(request_)
    assert marks.anonymous_id_for(request_) == new_id  # one per request
    response = HttpResponse()
    marks.finish(request_, response, protected=False)
    cookie = response.cookies["chat_anonymous_id"]
    assert cookie.value == new_id and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert response["Cache-Control"] == "private"

    logged_out = HttpResponse()
    marks.forget_anonymous_id(logged_out)
    marks.finish(request_, logged_out, protected=False)
    assert logged_out.cookies["chat_anonymous_id"].value == ""  # the view's deletion stands


def test_the_public_api_names_come_from_here():
    assert chat_security.anonymous_id_of is marks.anonymous_id_of
    assert chat_security.forget_anonymous_id is marks.forget_anonymous_id


def test_no_private_django_header_store_is_read():
    """Public APIs only (STYLE 12): ``ResponseHeaders._store`` changes without notice."""
    root = Path(chat_security.__file__).parent
    readers = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if "._store" in path.read_text("utf-8")
    ]
    assert readers == []
