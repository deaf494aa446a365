"""The demo project's own parts: `manage.py welcome` and the createsuperuser command it prints."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from project.settings import DEV_SECRET_KEY

ROOT = Path(__file__).resolve().parents[1]


def demo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A shell outside `make run`: no DJANGO_DEBUG, no secret key, the demo's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "NOTIFICATIONS_", "REDIS_"))}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env.update(extra)
    return env


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def printed_command(settings) -> str:
    settings.SECRET_KEY = DEV_SECRET_KEY  # as under `make run`
    out = io.StringIO()
    call_command("welcome", url="http://127.0.0.1:8000/", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Notifications: http://127.0.0.1:8000/  (admin: http://127.0.0.1:8000/admin/)"
    assert lines[1] == "No superuser yet. Create one with:"
    return lines[2].strip()


@pytest.mark.django_db
def test_welcome_prints_a_createsuperuser_command_that_works_outside_make_run(settings, tmp_path):
    command = printed_command(settings)
    assert command == "DJANGO_DEBUG=1 .venv/bin/python manage.py createsuperuser"
    env = demo_env(tmp_path, DJANGO_SUPERUSER_USERNAME="root", DJANGO_SUPERUSER_EMAIL="root@example.com",
                   DJANGO_SUPERUSER_PASSWORD="pw-root-123")
    migrated = run(f"DJANGO_DEBUG=1 {sys.executable} manage.py migrate --noinput", env)
    assert migrated.returncode == 0, migrated.stderr
    # Run exactly what was printed (with this interpreter; --noinput because tests have no TTY).
    created = run(command.replace(".venv/bin/python", sys.executable) + " --noinput", env)
    assert created.returncode == 0, created.stderr
    assert "Superuser created successfully." in created.stdout
    # ... and without the printed prefix, the demo's settings refuse the dev key (the bug fixed).
    bare = run(f"{sys.executable} manage.py createsuperuser --noinput", env)
    assert bare.returncode != 0 and "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in bare.stderr


@pytest.mark.django_db
def test_welcome_with_a_real_secret_key_prints_no_debug_prefix(settings):
    settings.SECRET_KEY = "a-real-key"
    out = io.StringIO()
    call_command("welcome", stdout=out)
    assert out.getvalue().splitlines()[-1].strip() == ".venv/bin/python manage.py createsuperuser"


@pytest.mark.django_db
def test_welcome_is_quiet_about_superusers_once_one_exists(staff):
    out = io.StringIO()
    call_command("welcome", stdout=out)
    assert "createsuperuser" not in out.getvalue()


def test_the_app_never_imports_the_demo_project():
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "notifications").rglob("*.py")
        if "import project" in path.read_text() or "from project" in path.read_text()
    ]
    assert offenders == []
