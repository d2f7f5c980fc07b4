"""The worker test project's URLs (tests/worker_urls.py) plus the metrics scrape at
``/metrics``, mounted as docs/observability.md tells a site to."""

from __future__ import annotations

from django.urls import path

from chat_security.metrics import metrics_view
from tests.worker_urls import urlpatterns as worker_urlpatterns

urlpatterns = [
    path("metrics", metrics_view, name="chat-security-metrics"),
    *worker_urlpatterns,
]
