"""Test settings for tests that run several real processes on one SQLite file.

Same as ``tests.settings`` but the database is the file named by
``CHAT_SECURITY_TEST_DB`` and keys change quickly (``KEY_CACHE_SECONDS`` 1).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import CHAT_SECURITY

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["CHAT_SECURITY_TEST_DB"],
        "OPTIONS": {"timeout": 20},
    }
}
CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_SECONDS": 1, "USAGE_FLUSH_SECONDS": 3600}
