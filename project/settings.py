"""Settings for the runnable project, read from the environment (README: Configuration)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1 or 0 (true/false), got {value!r}.")


DEBUG = env_bool("DJANGO_DEBUG", False)

DEV_SECRET_KEY = "django-insecure-dev-key-for-notifications-only"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "") or DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (the development key is refused)."
    )

ALLOWED_HOSTS = [
    host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if host.strip()
]

# Step 1 of "Add it to your project" (README): daphne first, channels and notifications.
INSTALLED_APPS = [
    "daphne",  # runserver serves the ASGI app through daphne
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "notifications",
    "project",  # the demo's own `manage.py welcome` (printed by `make run`)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

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
            ],
        },
    },
]

# Step 2: ASGI_APPLICATION here, CHANNEL_LAYERS below (in-memory, or channels-redis with REDIS_URL).
ASGI_APPLICATION = "project.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Persistent connections per worker thread (checked before reuse): a reconnect storm
        # is thousands of small queries, and opening a connection for each cost more than
        # the query. Streams never hold a connection (database_sync_to_async per query).
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # BEGIN IMMEDIATE: concurrent writers queue for the lock instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})

REDIS_URL = os.environ.get("REDIS_URL", "")
#: ``pubsub`` (default) or ``core``: which channels-redis layer carries events between processes
#: (docs/deployment.md, "Choosing the channel layer", has the measurements behind the default).
REDIS_LAYER = os.environ.get("REDIS_LAYER", "") or "pubsub"
if REDIS_LAYER not in ("pubsub", "core"):
    raise ImproperlyConfigured(f"REDIS_LAYER must be 'pubsub' or 'core', got {REDIS_LAYER!r}.")
if REDIS_URL and REDIS_LAYER == "pubsub":
    # One PUBLISH per event however many processes listen; pushed to each process's hub.
    # Anything published while a process is cut off from Redis is read back from the
    # database by its hub (gap detection and tail check in notifications/hub.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_keepalive": True}]},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8's default 5 s socket timeout cuts off channels-redis' 5 s blocking
                # BZPOPMIN, so an idle receive fails every 5 s: read for longer than that.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5,
                           "socket_keepalive": True}],
                "capacity": 10_000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", "") or BASE_DIR / "staticfiles"
# servestatic serves the app's and the admin's files straight from the finders, also with
# DEBUG off: a plain `daphne project.asgi:application` has a styled admin without a
# collectstatic step to forget (docs/deployment.md, "Static files").
SERVESTATIC_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"notifications": {"handlers": ["console"], "level": os.environ.get("NOTIFICATIONS_LOG_LEVEL", "INFO")}},
}

CSRF_FAILURE_VIEW = "project.views.csrf_failure"

# Bearer token for /notifications/metrics (docs/security.md); unset → staff and direct loopback only.
NOTIFICATIONS_METRICS_TOKEN = os.environ.get("NOTIFICATIONS_METRICS_TOKEN", "") or None

# HTTPS deployments (docs/deployment.md, "HTTPS"): DJANGO_HTTPS=1 behind a proxy that ends TLS
# and sets X-Forwarded-Proto itself (overwriting any the client sent). `check --deploy` is then
# clean (with a real DJANGO_SECRET_KEY and DEBUG off). The redirect and HSTS come from Django's
# SecurityMiddleware, which the stream (a Channels route) does not run: let the proxy redirect
# plain HTTP for every path. Each value below can be turned back off by its own variable.
if env_bool("DJANGO_HTTPS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "") or 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
