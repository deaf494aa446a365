"""The wheel in someone else's project (SPEC §12), as a Django team would add it.

Builds the wheel, installs it non-editable into a fresh virtualenv (no system site-packages),
creates a site with `django-admin startproject` plus a custom user model whose
``USERNAME_FIELD`` is ``email``, applies the six steps of README "Add it to your project"
(and nothing else), migrates, serves it with that venv's daphne (DEBUG off) and checks it
over real HTTP and a real websocket.

Dependencies come from a wheelhouse kept beside the test venv (``<sys.prefix>/wheelhouse``):
filled once from the index (pip's cache), then installed with ``--no-index``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import SSEClient, free_port, login, require_module, wait_for_port
from tests.test_packaging import build_wheel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
PASSWORDS = {"admin@example.com": "pw-admin-123", "alice@example.com": "pw-alice-123", "bob@example.com": "pw-bob-123"}


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300,
        what: str) -> subprocess.CompletedProcess[str]:
    """Run a step; on failure say which step, with its output."""
    try:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{what}: timed out after {timeout}s: {args}") from exc
    assert result.returncode == 0, f"{what} failed ({result.returncode}): {args}\n{result.stdout}\n{result.stderr}"
    return result


# -- the site a new user would write --------------------------------------------------------------------

ACCOUNTS_MODELS = '''
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra):
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra):
        return self.create_user(email, password, is_staff=True, is_superuser=True, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """No username at all: people sign in with their email address."""

    email = models.EmailField(unique=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    objects = UserManager()
'''

SITE_CONSUMERS = '''
from channels.generic.websocket import AsyncWebsocketConsumer


class Echo(AsyncWebsocketConsumer):
    """The site's own websocket route, which must keep working behind with_streams."""

    async def receive(self, text_data=None, bytes_data=None):
        user = self.scope["user"]
        await self.send(text_data=f"echo {text_data} from {user.get_username() or 'anonymous'}")
'''

# Step 4, around the site's own ProtocolTypeRouter with a websocket route.
SITE_ASGI = '''
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from mysite.consumers import Echo
from notifications.asgi import with_streams

application = with_streams(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AuthMiddlewareStack(URLRouter([path("ws/echo/", Echo.as_asgi())])),
        }
    )
)
'''

SITE_SETTINGS = '''

# --- added for the test: the site's own choices -------------------------------------------------
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
AUTH_USER_MODEL = "accounts.User"
TEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_REDIRECT_URL = "/"

# --- step 1 ----------------------------------------------------------------------------------------
INSTALLED_APPS = ["daphne", *INSTALLED_APPS, "channels", "notifications", "accounts"]

# --- step 2 ----------------------------------------------------------------------------------------
ASGI_APPLICATION = "mysite.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
'''

# Step 3 (plus the site's own home page and login).
SITE_URLS = '''
from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("notifications/", include("notifications.urls")),
    path("", TemplateView.as_view(template_name="home.html")),
]
'''

# Step 6, on the site's own template.
HOME_HTML = '''{% load notifications %}<!doctype html>
<html><head><title>My site</title></head>
<body><h1>My own site</h1>
{% notifications_widget %}
</body></html>
'''

LOGIN_HTML = '''<!doctype html><form method="post">{% csrf_token %}{{ form }}<button>Sign in</button></form>'''


@dataclass
class Site:
    venv: Path
    root: Path
    env: dict[str, str]
    url: str
    measurements: dict[str, object]

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([str(self.venv / "bin/python"), "manage.py", *args], cwd=self.root, env=self.env,
                   timeout=timeout, what=f"manage.py {args[0]}")


def fill_wheelhouse(wheel: Path) -> None:
    """Wheels of every dependency, built or downloaded once (pip's cache makes it quick after that)."""
    WHEELHOUSE.mkdir(exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--find-links", str(WHEELHOUSE), "-w", str(WHEELHOUSE),
         str(wheel)], timeout=600, what="pip wheel (filling the wheelhouse from the index)")


def install_into_fresh_venv(wheel: Path, venv: Path) -> float:
    """A venv of its own (no system site-packages), the wheel installed non-editable; returns seconds taken."""
    started = time.monotonic()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120, what="python -m venv")
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
               "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)]
    try:
        run(install, timeout=300, what="pip install --no-index")
    except AssertionError:
        fill_wheelhouse(wheel)
        started = time.monotonic()
        run(install, timeout=300, what="pip install --no-index (after filling the wheelhouse)")
    return time.monotonic() - started


def dependency_tree(venv: Path) -> str:
    """What the install pulled: each distribution with its version and what it requires."""
    script = textwrap.dedent('''
        import importlib.metadata as m
        for d in sorted(m.distributions(), key=lambda d: d.metadata["Name"].lower()):
            reqs = [r.split(";")[0] for r in (d.requires or []) if "extra ==" not in r]
            print(f"{d.metadata['Name']}=={d.version}: {', '.join(reqs) or '-'}")
    ''')
    return run([str(venv / "bin/python"), "-c", script], cwd=venv, timeout=60, what="listing the venv").stdout


def site_env() -> dict[str, str]:
    """The site's environment: nothing of this repository's settings or Python path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "NOTIFICATIONS_", "REDIS_", "DATABASE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(DJANGO_SETTINGS_MODULE="mysite.settings", PYTHONUNBUFFERED="1")
    return env


def create_site(venv: Path, root: Path) -> None:
    env = {k: v for k, v in site_env().items() if k != "DJANGO_SETTINGS_MODULE"}
    root.mkdir()
    run([str(venv / "bin/django-admin"), "startproject", "mysite", str(root)], env=env, timeout=60,
        what="django-admin startproject")
    (root / "accounts/migrations").mkdir(parents=True)
    (root / "accounts/__init__.py").write_text("")
    (root / "accounts/migrations/__init__.py").write_text("")
    (root / "accounts/models.py").write_text(ACCOUNTS_MODELS)
    (root / "mysite/consumers.py").write_text(SITE_CONSUMERS)
    (root / "mysite/asgi.py").write_text(SITE_ASGI)
    (root / "mysite/urls.py").write_text(SITE_URLS)
    with (root / "mysite/settings.py").open("a") as settings:
        settings.write(SITE_SETTINGS)
    (root / "templates/registration").mkdir(parents=True)
    (root / "templates/home.html").write_text(HOME_HTML)
    (root / "templates/registration/login.html").write_text(LOGIN_HTML)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_module("websockets", package="websockets")
    tmp = tmp_path_factory.mktemp("wheel-site")
    wheel = build_wheel(tmp / "build")
    venv, root = tmp / "venv", tmp / "site"
    install_seconds = install_into_fresh_venv(wheel, venv)
    installed = run([str(venv / "bin/python"), "-c", "import notifications; print(notifications.__file__)"],
                    cwd=tmp, timeout=60, what="importing the installed app").stdout.strip()
    assert installed.startswith(str(venv)), f"not the installed copy: {installed}"
    measurements: dict[str, object] = {
        "wheel": wheel.name, "wheel_bytes": wheel.stat().st_size,
        "install_seconds": round(install_seconds, 1), "dependency_tree": dependency_tree(venv),
    }
    create_site(venv, root)
    env = site_env()
    port = free_port()
    s = Site(venv=venv, root=root, env=env, url=f"http://127.0.0.1:{port}", measurements=measurements)
    s.manage("makemigrations", "accounts")
    s.manage("migrate", "--noinput")  # step 5
    run([str(venv / "bin/python"), "manage.py", "createsuperuser", "--noinput"], cwd=root, timeout=60,
        env={**env, "DJANGO_SUPERUSER_EMAIL": "admin@example.com", "DJANGO_SUPERUSER_PASSWORD": PASSWORDS[
            "admin@example.com"]}, what="createsuperuser --noinput with an email USERNAME_FIELD")
    s.manage("shell", "-c", "from django.contrib.auth import get_user_model; U = get_user_model(); "
             "U.objects.create_user('alice@example.com', 'pw-alice-123'); "
             "U.objects.create_user('bob@example.com', 'pw-bob-123')")
    log_path = tmp / "daphne.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(venv / "bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "mysite.asgi:application"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, timeout=30, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\ndaphne's log:\n{log_path.read_text(errors='replace')}") from exc
        yield s
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        print("\n-- wheel measurements --\n" + json.dumps({k: v for k, v in measurements.items()
                                                        if k != "dependency_tree"}, indent=1))
        print(measurements["dependency_tree"])


# -- helpers ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def signed_in(site: Site, email: str | None) -> Iterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=site.url, timeout=20) as client:
        if email is not None:
            await login(client, email, PASSWORDS[email])
        yield client


async def admin_login(client: httpx.AsyncClient, email: str) -> None:
    """Sign in on the admin's own login page, as staff do."""
    page = await client.get("/admin/login/?next=/admin/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:500]
    response = await client.post("/admin/login/?next=/admin/", data={
        "username": email, "password": PASSWORDS[email], "csrfmiddlewaretoken": token.group(1), "next": "/admin/",
    })
    assert response.status_code == 302 and response.headers["location"] == "/admin/", response.text[-1500:]


async def admin_add(client: httpx.AsyncClient, **fields: str) -> int:
    add = "/admin/notifications/notification/add/"
    page = await client.get(add)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.status_code
    data = {"title": "", "body": "", "level": "info", "url": "", "recipient": "", "group": "", **fields,
            "csrfmiddlewaretoken": token.group(1)}
    response = await client.post(add, data=data)
    errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.text, re.S)
    assert response.status_code == 302, f"admin add refused: {errors or response.text[-1500:]}"
    listing = await client.get("/admin/notifications/notification/")
    return max(int(m) for m in re.findall(r"/admin/notifications/notification/(\d+)/change/", listing.text))


def user_pk(site: Site, email: str) -> str:
    return site.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                       f"print(get_user_model().objects.get(email={email!r}).pk)").stdout.splitlines()[-1].strip()


def hello(stream: SSEClient) -> dict:
    (event,) = stream.of_type("hello")
    return json.loads(event.data)


def titles(stream: SSEClient) -> list[str]:
    return [json.loads(e.data)["title"] for e in stream.of_type("notification")]


# -- the checks -----------------------------------------------------------------------------------------


async def test_anonymous_stream_says_hello_with_no_user(site: Site) -> None:
    async with signed_in(site, None) as client, SSEClient(client, "/notifications/stream/") as stream:
        assert stream.response is not None and stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        await stream.read_until(lambda s: s.of_type("hello"))
        assert hello(stream)["user"] is None


async def test_admin_and_command_notices_arrive_live_and_targeted_ones_reach_only_their_user(site: Site) -> None:
    async with (
        signed_in(site, "alice@example.com") as alice, signed_in(site, "bob@example.com") as bob,
        httpx.AsyncClient(base_url=site.url, timeout=20) as staff,
        SSEClient(alice, "/notifications/stream/") as alice_stream,
        SSEClient(bob, "/notifications/stream/") as bob_stream,
    ):
        await admin_login(staff, "admin@example.com")
        for stream in (alice_stream, bob_stream):
            await stream.read_until(lambda s: s.of_type("hello"))
        # hello's user is the model's natural key: the email address.
        assert hello(alice_stream)["user"] == "alice@example.com"

        everyone = await admin_add(staff, title="From the admin", level="warning")
        await alice_stream.read_until(lambda s: everyone in s.notification_ids())
        await bob_stream.read_until(lambda s: everyone in s.notification_ids())

        # Through the admin to one user (a raw id field: the user's pk) ...
        to_alice_admin = await admin_add(staff, title="Admin, for Alice", recipient=user_pk(site, "alice@example.com"))
        # ... from another process, by natural key (that process publishes nothing to daphne's in-memory
        # layer: the hub's tail check finds it in the database) ...
        sent = site.manage("notify", "From the command", "--user", "alice@example.com")
        assert "to user alice@example.com" in sent.stdout
        to_alice_cmd = int(re.search(r"Sent notification (\d+)", sent.stdout).group(1))
        # ... and through the JSON API, recipient = the email address.
        api = await staff.post("/notifications/api/", json={"title": "API, for Bob", "recipient": "bob@example.com"},
                               headers={"X-CSRFToken": staff.cookies["csrftoken"]})
        assert api.status_code == 201, api.text
        to_bob = api.json()["id"]
        last = await admin_add(staff, title="Last, for everyone")

        await alice_stream.read_until(lambda s: last in s.notification_ids(), timeout=20)
        await bob_stream.read_until(lambda s: last in s.notification_ids(), timeout=20)
        assert alice_stream.notification_ids() == [everyone, to_alice_admin, to_alice_cmd, last]
        assert bob_stream.notification_ids() == [everyone, to_bob, last]
        assert "From the command" in titles(alice_stream) and "From the command" not in titles(bob_stream)


def test_notify_to_an_unknown_email_is_a_command_error(site: Site) -> None:
    bad = subprocess.run(
        [str(site.venv / "bin/python"), "manage.py", "notify", "x", "--user", "nobody@example.com"],
        cwd=site.root, env=site.env, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode != 0 and "No user is called 'nobody@example.com'" in bad.stderr


async def test_replay_by_last_event_id_sends_exactly_what_was_missed(site: Site) -> None:
    first = int(re.search(r"Sent notification (\d+)", site.manage("notify", "Replay one").stdout).group(1))
    second = int(re.search(r"Sent notification (\d+)", site.manage(
        "notify", "Replay two", "--user", "alice@example.com").stdout).group(1))
    third = int(re.search(r"Sent notification (\d+)", site.manage(
        "notify", "Replay three, Bob's", "--user", "bob@example.com").stdout).group(1))
    fourth = int(re.search(r"Sent notification (\d+)", site.manage("notify", "Replay four").stdout).group(1))
    async with signed_in(site, "alice@example.com") as alice, SSEClient(
        alice, "/notifications/stream/", headers={"Last-Event-ID": str(first)}
    ) as stream:
        # The hub learns of notices sent from another process within its 2 s tail check (the
        # in-memory layer does not cross processes): some may come right after hello, live.
        await stream.read_until(lambda s: fourth in s.notification_ids(), timeout=15)
        await stream.drain(0.5)
        assert stream.notification_ids() == [second, fourth]
        assert third not in stream.notification_ids()


async def test_the_widget_renders_on_the_sites_own_template(site: Site) -> None:
    title = "Shown on my own page"
    site.manage("notify", title, "--user", "alice@example.com")
    async with signed_in(site, "alice@example.com") as alice:
        page = await alice.get("/")
    assert page.status_code == 200, page.text[:1000]
    html = page.text
    assert "<h1>My own site</h1>" in html and title in html
    assert 'data-notifications-client' in html and 'data-user="alice@example.com"' in html
    assert 'src="/static/notifications/notifications.js"' in html
    cursor = re.search(r'data-last-event-id="(\d+)"', html)
    assert cursor and int(cursor.group(1)) > 0
    async with signed_in(site, None) as anonymous:
        assert title not in (await anonymous.get("/")).text


async def test_the_inbox_page_under_the_apps_include(site: Site) -> None:
    async with signed_in(site, "alice@example.com") as alice:
        page = await alice.get("/notifications/")
    assert page.status_code == 200 and 'data-notifications-client' in page.text


def test_findstatic_finds_the_client_in_the_installed_wheel(site: Site) -> None:
    found = site.manage("findstatic", "notifications/notifications.js", "notifications/notifications.css").stdout
    assert str(site.venv) in found and "site-packages/notifications/static" in found, found


async def test_the_sites_websocket_route_still_answers_through_with_streams(site: Site) -> None:
    from websockets.asyncio.client import connect

    async with signed_in(site, "alice@example.com") as alice:
        cookie = f"sessionid={alice.cookies['sessionid']}"
    ws_url = site.url.replace("http://", "ws://") + "/ws/echo/"
    async with connect(ws_url, additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 10) == "echo ping from alice@example.com"
    async with connect(ws_url, open_timeout=10) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 10) == "echo hi from anonymous"


def test_the_fresh_venv_has_the_app_and_none_of_the_demos_packages(site: Site) -> None:
    tree = site.measurements["dependency_tree"]
    assert isinstance(tree, str)
    names = {line.split("==")[0].lower() for line in tree.splitlines()}
    assert {"django-notification-streams", "django", "channels", "daphne", "twisted", "asgiref"} <= names
    assert not names & {"dj-database-url", "servestatic", "psycopg", "channels-redis", "uvicorn"}
