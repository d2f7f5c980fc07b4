"""Test settings for tests that run several real processes on one database.

Same as ``tests.settings`` but keys change quickly (``KEY_CACHE_SECONDS`` 1) and
the processes of a test share its database (``tests.servers.process_env``):

* lane 1: the SQLite file named by ``CHAT_SECURITY_TEST_DB``; each process has
  its own local-memory cache and in-memory channel layer;
* lane 2 (``CHAT_SECURITY_TEST_LANE=pg``): the PostgreSQL database named by
  ``CHAT_SECURITY_TEST_DB`` on the ``DATABASE_URL`` server, and Redis as cache
  and channel layer (``tests.settings_pg``, which fails loudly without the
  URLs) under a prefix of the same name, so that no two tests share entries;
  that Redis announces key-store changes (``KEY_CACHE_ALIAS``).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import CHAT_SECURITY

if os.environ.get("CHAT_SECURITY_TEST_LANE") == "pg":
    from tests.settings_pg import CACHES, CHANNEL_LAYERS, DATABASES

    _NAME = os.environ["CHAT_SECURITY_TEST_DB"]
    DATABASES = {"default": {**DATABASES["default"], "NAME": _NAME}}
    CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": _NAME}}
    _LAYER = CHANNEL_LAYERS["default"]
    CHANNEL_LAYERS = {"default": {**_LAYER, "CONFIG": {**_LAYER["CONFIG"], "prefix": _NAME}}}
    CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_ALIAS": "default"}  # one Redis for all
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["CHAT_SECURITY_TEST_DB"],
            "OPTIONS": {"timeout": 20},
        }
    }
CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_SECONDS": 1, "USAGE_FLUSH_SECONDS": 3600}
