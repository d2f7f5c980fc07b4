"""Settings for the multi-process metrics test: the worker settings with metrics on
and ``/metrics`` mounted (tests/metrics_urls.py). The server's environment sets
``PROMETHEUS_MULTIPROC_DIR``, as a gunicorn deployment does."""

from tests.worker_settings import *  # noqa: F403

ROOT_URLCONF = "tests.metrics_urls"
CHAT_SECURITY = {**CHAT_SECURITY, "METRICS": True}  # noqa: F405
