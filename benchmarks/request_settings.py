"""Settings for ``bench_request.py``: a ``startproject`` site plus chat_security.

``MIDDLEWARE`` is Django's default seven with ``ChatSecurityMiddleware`` appended,
as the README says; the benchmark builds its baseline handler without it. The
SQLite file lives in the temporary folder the benchmark names in
``CHAT_BENCH_DB`` (it is migrated at the start of each run).
"""

import os

from benchmarks.bench_common import (
    STARTPROJECT_APPS,
    STARTPROJECT_MIDDLEWARE,
    STARTPROJECT_TEMPLATES,
)

SECRET_KEY = "benchmark-only-secret-key-not-for-production-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [*STARTPROJECT_APPS, "chat_security"]
DJANGO_MIDDLEWARE = STARTPROJECT_MIDDLEWARE
MIDDLEWARE = [*DJANGO_MIDDLEWARE, "chat_security.middleware.ChatSecurityMiddleware"]
ROOT_URLCONF = "benchmarks.request_urls"
TEMPLATES = STARTPROJECT_TEMPLATES
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_BENCH_DB", ":memory:"),
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHAT_SECURITY = {
    "ENCRYPTION_KEYS": ["benchmark-encryption-key-0123456789-abcdefghijkl"],
    "PROTECTED_PATHS": ["/chat/api/"],
    "CLAIMS_BUILDER": "benchmarks.request_urls.bench_claims",
    # bench_request.py --metrics: Prometheus metrics on (prometheus_client's registry)
    "METRICS": os.environ.get("CHAT_BENCH_METRICS") == "1",
}
