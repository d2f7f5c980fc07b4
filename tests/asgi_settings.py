"""Settings for browser tests against a real ASGI server: daphne's ``runserver``.

Same as ``tests.process_settings`` (one database shared by the processes:
a SQLite file, or PostgreSQL with Redis in lane 2) plus daphne, whose
``runserver`` serves HTTP and WebSockets, and the demo's claims builder; tokens
live eight seconds, so a widget renews in band within the test.
"""

from tests.process_settings import *  # noqa: F403
from tests.process_settings import CHAT_SECURITY, INSTALLED_APPS

INSTALLED_APPS = ["daphne", *INSTALLED_APPS]
ASGI_APPLICATION = "demo_site.asgi.application"
CHAT_SECURITY = {
    **CHAT_SECURITY,
    "DEFAULT_TOKEN_TTL": 8,
    "CLAIMS_BUILDER": "demo_site.chat.claims.demo_claims",
    "ANONYMOUS_IDS": True,  # as in the demo: anonymous chat while security is off
}
