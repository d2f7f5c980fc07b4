"""Settings of the served benchmark's small project (``run_served.sh``).

``SERVED_STACK`` picks the middleware: ``plain`` (Django's seven ``startproject``
middleware), ``chat`` (the same plus ``ChatSecurityMiddleware``) or ``drf`` (the
seven; the DRF views authenticate with simplejwt). Every stack has the same
apps, URLs and SQLite database (``$SERVED_WORK/db.sqlite3``); simplejwt's
signing key is read from ``$SERVED_WORK/simplejwt.key``.
"""

import os
from pathlib import Path

from bench_common import STARTPROJECT_APPS, STARTPROJECT_MIDDLEWARE, STARTPROJECT_TEMPLATES

WORK = Path(os.environ["SERVED_WORK"])
STACK = os.environ.get("SERVED_STACK", "plain")
if STACK not in ("plain", "chat", "drf"):
    raise RuntimeError(f"SERVED_STACK must be plain, chat or drf, not {STACK!r}")

SECRET_KEY = "served-benchmark-only-secret-key-not-for-production-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [*STARTPROJECT_APPS, "rest_framework", "chat_security"]
MIDDLEWARE = list(STARTPROJECT_MIDDLEWARE)
if STACK == "chat":
    MIDDLEWARE += ["chat_security.middleware.ChatSecurityMiddleware"]
SILENCED_SYSTEM_CHECKS = ["chat_security.E022"]  # the plain and drf stacks leave it out
ROOT_URLCONF = "served.urls"
WSGI_APPLICATION = "served.wsgi.application"
TEMPLATES = STARTPROJECT_TEMPLATES
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": WORK / "db.sqlite3"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHAT_SECURITY = {"ENCRYPTION_KEYS": ["served-benchmark-encryption-key-0123456789-abcdef"]}

_SIMPLEJWT_KEY = WORK / "simplejwt.key"
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": _SIMPLEJWT_KEY.read_text().strip() if _SIMPLEJWT_KEY.exists() else "unset",
    "UPDATE_LAST_LOGIN": False,
}
