"""The wheel `pip wheel .` builds: every app file, `py.typed`, no demo `project`, the app's own dependencies only.

``build_wheel`` is shared with tests/integration/test_wheel.py, which installs the wheel into a
fresh virtualenv and runs a site built with `django-admin startproject` on it.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


def source_files() -> list[str]:
    """What a fresh clone has: tracked files plus new ones not ignored (the working tree as committed)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout
    return [name for name in out.splitlines() if (ROOT / name).is_file()]


def build_wheel(out_dir: Path) -> Path:
    """`pip wheel --no-deps .` from a clean copy of the source, so no stale build/ leaks into it."""
    src = out_dir / "src"
    for name in source_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    dist = out_dir / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"pip wheel . failed:\n{result.stdout}\n{result.stderr}"
    wheels = list(dist.glob("django_notification_streams-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_app_file_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    app_files = {name for name in source_files() if name.startswith("notifications/")}
    assert app_files, "no app files found"
    assert sorted(app_files - names) == []  # migrations, templates, static, templatetags, commands …
    for needed in (
        "notifications/py.typed",
        "notifications/migrations/0001_initial.py",
        "notifications/templatetags/notifications.py",
        "notifications/management/commands/notify.py",
        "notifications/templates/notifications/widget.html",
        "notifications/templates/notifications/inbox.html",
        "notifications/static/notifications/notifications.js",
        "notifications/asgi.py",
    ):
        assert needed in names
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"notifications"}  # no `project`, `tests`, `bench`, `soak`, `templates`
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_the_wheel_requires_what_the_app_imports_and_no_demo_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    requires = metadata.get_all("Requires-Dist") or []
    required = {req.split(";")[0].split(">")[0].split("<")[0].split("[")[0].strip().lower()
                for req in requires if "extra ==" not in req}
    assert required == {"django", "asgiref", "channels", "daphne", "twisted"}
    assert set(metadata.get_all("Provides-Extra") or []) >= {"redis", "uvicorn", "test"}
    for demo_only in ("dj-database-url", "servestatic", "psycopg"):
        assert not any(req.lower().startswith(demo_only) and "extra ==" not in req for req in requires)
    # What the code reaches into is pinned with an upper bound.
    for name in ("channels", "daphne", "twisted"):
        (req,) = [r for r in requires if r.lower().startswith(name) and "extra ==" not in r]
        assert "<" in req, req
    (uvicorn,) = [r for r in requires if r.startswith("uvicorn") and 'extra == "uvicorn"' in r]
    assert "<" in uvicorn, uvicorn


def test_the_demo_installs_its_own_packages_from_its_requirements() -> None:
    requirements = (ROOT / "project/requirements.txt").read_text()
    for package in ("dj-database-url", "servestatic", "psycopg[binary]"):
        assert package in requirements
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-r project/requirements.txt") >= 2  # `make run`'s install and `make test`'s
