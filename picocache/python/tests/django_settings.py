"""A real Django settings module for the DjangoCache tests."""

import os
import tempfile

SECRET_KEY = "picocache-tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes"]
_DB = os.path.join(tempfile.gettempdir(), f"picocache-django-{os.getpid()}.sqlite3")
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB}}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "default",
                "OPTIONS": {"MAX_ENTRIES": 100000}},
    # A short configured timeout, to check that DjangoCache respects it.
    "short": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "short", "TIMEOUT": 1},
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "picocache_django_cache",
           "OPTIONS": {"MAX_ENTRIES": 100000}},
}
if os.environ.get("PICOCACHE_REDIS_URL"):
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["PICOCACHE_REDIS_URL"],
        "TIMEOUT": 300,
    }
