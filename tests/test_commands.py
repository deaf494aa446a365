"""manage.py notify: the same notify(), clear CommandErrors, nothing stored on bad input."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_notify_everyone(capsys):
    call_command("notify", "Deploy starting", "--level", "warning", "--body", "b", "--url", "/status")
    n = Notification.objects.get()
    assert (n.title, n.level, n.body, n.url, n.audience) == ("Deploy starting", "warning", "b", "/status", "everyone")
    assert f"Sent notification {n.id} to everyone." in capsys.readouterr().out


def test_notify_user_and_group(alice, group):
    call_command("notify", "u", "--user", "alice")
    call_command("notify", "g", "--group", "oncall")
    assert Notification.objects.get(title="u").recipient == alice
    assert Notification.objects.get(title="g").group == group


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--user", "nobody"], "No user is called 'nobody'"),
        (["x", "--group", "nogroup"], "No group is called 'nogroup'"),
        (["x", "--level", "loud"], "Unknown level 'loud'"),
        ([""], "title"),
        (["x", "--user", "alice", "--group", "oncall"], "not both"),
    ],
)
def test_notify_bad_input_is_command_error(alice, group, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("notify", *args)
    assert not Notification.objects.exists()


def test_notify_exits_non_zero_from_the_shell(tmp_path):
    import subprocess
    import sys

    from tests.support.servers import ROOT, project_env

    env = project_env(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    command = [sys.executable, "manage.py", "notify", "x", "--level", "loud"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Unknown level" in result.stderr
