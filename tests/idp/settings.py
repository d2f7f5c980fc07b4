"""Settings of the test identity provider: django-oauth-toolkit with OpenID Connect on.

This is a Django project of its own, run in processes of its own (never in the
pytest process, which runs ``tests.settings``). ``tests.idp.provider`` starts
it with these variables:

``IDP_DATA_DIR``
    a directory of the provider's own: its SQLite database lives there.
``IDP_ISSUER``
    the issuer, ``http://127.0.0.1:<port>/o``. django-oauth-toolkit puts
    ``OIDC_ISS_ENDPOINT`` verbatim into the discovery document's ``issuer``
    and into every ID token's ``iss``.
``IDP_SIGNING_KEY_FILE``
    a PEM file with the RSA private key that signs ID tokens (RS256).
``IDP_INACTIVE_KEY_FILES``
    PEM files (``os.pathsep``-separated, may be empty) with rotated-out keys:
    they sign nothing but stay published in the JWKS.
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ["IDP_DATA_DIR"])
ISSUER = os.environ["IDP_ISSUER"]
INACTIVE_KEY_FILES = os.environ.get("IDP_INACTIVE_KEY_FILES", "").split(os.pathsep)


def _read(path: str) -> str:
    return Path(path).read_text("ascii")


SECRET_KEY = "tests-idp-only-secret-key-not-for-production-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.idp.urls"
# The login page's template; DOT's own templates come from the app.
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "idp.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Fast hashing for the users' passwords and the client secret (a test provider).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "/accounts/login/"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": _read(os.environ["IDP_SIGNING_KEY_FILE"]),
    "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [_read(path) for path in INACTIVE_KEY_FILES if path],
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "The user's name",
        "email": "The user's email address",
    },
    "OAUTH2_VALIDATOR_CLASS": "tests.idp.validators.ClaimsValidator",
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
}
