"""URLs of the demo site."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path

from chat_security import views as chat_security_views
from chat_security.metrics import metrics_view
from demo_site.chat import views as demo_views

urlpatterns = [
    path("", demo_views.dashboard, name="dashboard"),
    path("accounts/login/", demo_views.DemoLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(next_page="login"), name="logout"),
    # The app's views, routed where the README suggests.
    path("api/chat-token", chat_security_views.chat_token, name="chat-token"),
    path(".well-known/chat-security/jwks.json", chat_security_views.jwks, name="chat-jwks"),
    path(
        ".well-known/chat-security/<slug:name>/jwks.json",
        chat_security_views.integration_jwks,
        name="chat-integration-jwks",
    ),
    path(
        ".well-known/chat-security/<slug:name>/<str:kid>.pem",
        chat_security_views.signing_key_pem,
        name="chat-signing-key-pem",
    ),
    # Prometheus scrape; 404 unless CHAT_SECURITY_METRICS=true. A real site lets only
    # its Prometheus server reach it (docs/observability.md).
    path("metrics", metrics_view, name="chat-security-metrics"),
    path("chat/", include("demo_site.chat.urls")),
    path("admin/", admin.site.urls),
]
