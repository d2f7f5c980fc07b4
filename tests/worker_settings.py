"""Settings for the many-worker tests: ``tests.process_settings`` plus a cache all workers share.

Lane 2 already shares Redis (``tests.process_settings``); lane 1 uses the
database cache (table ``chat_security_test_cache``, made by ``createcachetable``),
which every process on the test's SQLite file shares. Either way key-store
changes are announced through it (``KEY_CACHE_ALIAS``). A test that stops the
cache gives the workers a Redis of its own (``CHAT_SECURITY_TEST_REDIS_CACHE``).
The URLconf adds a protected view that names the worker process that answered.
"""

import os

from tests.process_settings import *  # noqa: F403

if os.environ.get("CHAT_SECURITY_TEST_REDIS_CACHE"):  # a Redis of the test's own, to stop
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["CHAT_SECURITY_TEST_REDIS_CACHE"],
        }
    }
elif os.environ.get("CHAT_SECURITY_TEST_LANE") != "pg":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "chat_security_test_cache",
        }
    }
ROOT_URLCONF = "tests.worker_urls"
if os.environ.get("CHAT_SECURITY_TEST_POLL"):  # the workers ask the database every interval
    CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_ALIAS": None}  # noqa: F405
else:
    CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_ALIAS": "default"}  # noqa: F405
if os.environ.get("CHAT_SECURITY_TEST_JWKS"):  # identity-provider tests: timings and hosts
    import json

    CHAT_SECURITY = {**CHAT_SECURITY, **json.loads(os.environ["CHAT_SECURITY_TEST_JWKS"])}
