"""Settings for the demo site. Every value comes from the environment through
django-environ, with embedded defaults so the demo runs with no ``.env``."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdef"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)  # optional; absent is fine

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
# demo_site/checks.py warns (demo.W001) while DEV_SECRET_KEY is in use.
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # First: its runserver (ASGI, WebSockets) replaces Django's and staticfiles'.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chat_security",
    "demo_site.chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Django's SessionMiddleware, answering 503 instead of 500 while the database
    # is down: for every view, and for the session save that follows it.
    "demo_site.chat.outage.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chat_security.middleware.ChatSecurityMiddleware",
]
ROOT_URLCONF = "demo_site.urls"
# Flash messages in their cookie only: never a session write on the way out.
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "demo_site.wsgi.application"
ASGI_APPLICATION = "demo_site.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# An agent socket re-reads the staff login at least this often (and before each message).
DEMO_AGENT_RECHECK_SECONDS = env.float("DEMO_AGENT_RECHECK_SECONDS", default=1.0)

# Live chat between processes needs Redis; one process (runserver) does with memory.
REDIS_URL = env.str("REDIS_URL", default="")
# socket_timeout None, as before redis-py 8: its default of 5 s ends a receive that
# waits on an idle channel (BZPOPMIN, 5 s) with TimeoutError, so idle consumers crashed.
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

USE_TZ = True
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
LANGUAGE_CODE = "en-us"
USE_I18N = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHAT_SECURITY = {
    # A dedicated at-rest key; the default below is for the local demo only.
    "ENCRYPTION_KEYS": env.list(
        "CHAT_SECURITY_ENCRYPTION_KEYS",
        default=["demo-only-encryption-key-change-me-0123456789"],
    ),
    "GRACE_PERIOD": env.int("CHAT_SECURITY_GRACE_PERIOD", default=48 * 3600),
    "ANONYMOUS_IDS": env.bool("CHAT_SECURITY_ANONYMOUS_IDS", default=True),
    "CRM_URL_TEMPLATE": env.str(
        "CHAT_SECURITY_CRM_URL_TEMPLATE", default="https://crm.example.com/contacts/{crm_id}"
    ),
    # Adds userData and agentData for the demo users (the bot, the Visitor Details card).
    "CLAIMS_BUILDER": "demo_site.chat.claims.demo_claims",
    # Announce key changes through the cache only when it is one Redis that every
    # server shares (CACHE_URL=redis://...); a per-process cache is never trusted.
    "KEY_CACHE_ALIAS": env.str(
        "CHAT_SECURITY_KEY_CACHE_ALIAS",
        default="default" if "redis" in CACHES["default"]["BACKEND"].lower() else "",
    )
    or None,
    # Identity providers on the local network (SPEC §14): hosts that may resolve to
    # private addresses, comma-separated (e.g. "keycloak.internal,10.0.0.5").
    "JWKS_PRIVATE_HOSTS": env.list("CHAT_SECURITY_JWKS_PRIVATE_HOSTS", default=[]),
    # Prometheus metrics (the metrics extra), scraped at /metrics; off by default. Under
    # several worker processes set PROMETHEUS_MULTIPROC_DIR too (docs/observability.md).
    "METRICS": env.bool("CHAT_SECURITY_METRICS", default=False),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"chat_security": {"handlers": ["console"], "level": "INFO"}},
}
