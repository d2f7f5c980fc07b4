"""Settings for the many-worker tests: ``tests.process_settings`` plus a cache all workers share.

Redis when the lane provides ``REDIS_URL`` (PostgreSQL + Redis lane), else a
cache folder (``CHAT_SECURITY_TEST_CACHE``): either way shared by every
process, so key-store changes are announced through it. The URLconf adds a
protected view that names the worker process that answered.
"""

import os

from tests.process_settings import *  # noqa: F403

if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": os.environ["CHAT_SECURITY_TEST_CACHE"],
        }
    }
ROOT_URLCONF = "tests.worker_urls"
