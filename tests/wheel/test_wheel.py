"""The package as a user installs it: sdist and wheel built with `python -m build`, the wheel
installed alone into a fresh virtualenv outside the checkout, and every command run from there
(`make test-wheel`). Whatever the wheel lacks (a migration, its template, the page's files, an
entry point, the Celery settings) fails here, where the editable checkout would hide it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers import __version__
from timers.embedded import free_port

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]

BROKER_DB = 12  # a Redis database no other suite uses
INSTALL_TIMEOUT = 600  # the dependencies come from the package index


@dataclass
class Installed:
    """A virtualenv holding the built wheel and its dependencies, and a directory to run in."""

    venv: Path
    workdir: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, **extra: str) -> dict[str, str]:
        path = f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return {"PATH": path, "VIRTUAL_ENV": str(self.venv), "PYTHONPATH": "", **extra}

    def run(self, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.workdir,
            env={**os.environ, **self.env(**env)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run_checked(argv: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def clean_copy(destination: Path) -> Path:
    """The checkout as a fresh clone with its working changes would be: the files git tracks or
    would track, without the build's leftovers (a stale `*.egg-info/SOURCES.txt` in the checkout
    puts files into the sdist that the package data no longer lists)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=processes.ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = processes.ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    source = clean_copy(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    # The sdist first, then the wheel built from it: both must carry everything.
    run_checked(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        cwd=dist,
        timeout=300,
    )
    wheels = list(dist.glob("celery_timers-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("celery_timers-*.tar.gz")), list(dist.iterdir())
    venv = tmp_path_factory.mktemp("venv")
    run_checked([sys.executable, "-m", "venv", str(venv)], cwd=dist, timeout=120)
    run_checked(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])],
        cwd=dist,
        timeout=INSTALL_TIMEOUT,
    )
    return Installed(venv, tmp_path_factory.mktemp("outside"))


def test_the_wheel_is_what_gets_imported_and_brings_no_celeryconfig(installed: Installed) -> None:
    probe = (
        "import importlib.metadata, importlib.resources, importlib.util, json, timers; "
        "template = importlib.resources.files('timers') / 'migrations' / 'script.py.mako'; "
        "print(json.dumps([timers.__file__, timers.__version__, "
        "importlib.util.find_spec('celeryconfig') is None, template.is_file(), "
        "[e.value for e in importlib.metadata.entry_points(group='pytest11')]]))"
    )
    done = installed.run(installed.bin("python"), "-c", probe)
    assert done.returncode == 0, done.stderr
    location, version, no_celeryconfig, has_template, plugins = json.loads(done.stdout)
    assert Path(location).is_relative_to(installed.venv), location
    assert version == __version__
    assert no_celeryconfig, "the wheel installs a top-level celeryconfig module"
    # `alembic revision` needs it; `timers migrate` alone would not notice its absence.
    assert has_template, "the wheel lacks migrations/script.py.mako"
    assert "timers.pytest_plugin" in plugins  # the pytest plugin for users' tests


@pytest.mark.parametrize("argv", [["timers", "--help"], ["python", "-m", "timers", "--help"]])
def test_the_command_answers_help(installed: Installed, argv: list[str]) -> None:
    done = installed.run(installed.bin(argv[0]), *argv[1:])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: timers"), done.stdout
    assert "migrate" in done.stdout and "DATABASE_URL" in done.stdout


@pytest.fixture(scope="module")
def database_url(services: Services) -> Iterator[str]:
    """An empty database: the wheel's own migrations lay it."""
    name = create_database(services)
    yield services.database_url(name)
    drop_database(services, name)


@pytest.fixture(scope="module")
def stack_env(
    services: Services, database_url: str, installed: Installed
) -> Iterator[dict[str, str]]:
    broker = services.redis_database(BROKER_DB)
    redis.Redis.from_url(broker).flushdb()
    yield installed.env(
        DATABASE_URL=database_url,
        REDIS_URL=broker,
        API_KEY=API_KEY,
        TIMERS_ALLOWED_NETWORKS=LOCAL_NETWORKS,
        TIMERS_LOAD_INTERVAL="1",
        TIMERS_EXECUTE_INTERVAL="0.1",
        LOG_LEVEL="INFO",
    )
    redis.Redis.from_url(broker).flushdb()


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def started(proc: processes.Process, text: str, timeout: float) -> processes.Process:
    assert proc.wait_for_output(text, timeout), proc.output()
    return proc


def test_migrate_then_the_whole_stack_delivers_a_timer_once(
    installed: Installed, stack_env: dict[str, str]
) -> None:
    migrate = installed.run(installed.bin("timers"), "migrate", **stack_env)  # type: ignore[arg-type]
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "database is at head" in migrate.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    running: list[processes.Process] = []
    receiver = Receiver().start()
    try:

        def start(name: str, argv: list[str]) -> processes.Process:
            proc = processes.Process(f"wheel-{name}", argv, stack_env, cwd=installed.workdir)
            running.append(proc)
            return proc

        api = start("api", [installed.bin("timers"), "api", "--port", str(port)])
        worker = start(
            "worker",
            [
                installed.bin("celery"),
                "-A",
                "timers.celery_app",
                "worker",
                "--loglevel=INFO",
                "-n",
                "wheel@%h",
            ],
        )
        scheduler = start("scheduler", [installed.bin("python"), "-m", "timers.scheduler"])
        assert wait_until(lambda: call(base, "GET", "/health")[0] == 200, 60), api.output()
        started(worker, "ready", 60)
        started(scheduler, "scheduler started", 60)

        status, page = call(base, "GET", "/ui")
        assert status == 200 and b"<html" in page.lower(), page[:200]
        for asset in ("app.js", "app.css"):
            status, body = call(base, "GET", f"/ui/{asset}")
            assert status == 200 and body, asset

        def create(in_seconds: float) -> str:
            at = datetime.now(UTC) + timedelta(seconds=in_seconds)
            status, body = call(
                base,
                "POST",
                "/timers",
                {
                    "execute_at": at.isoformat(),
                    "callback_type": "http",
                    "callback_config": {"url": receiver.url("/hook"), "payload": {"from": "wheel"}},
                },
            )
            assert status == 201, body
            return str(json.loads(body)["data"]["id"])

        def completed(timer_id: str) -> bool:
            status, body = call(base, "GET", f"/timers/{timer_id}")
            return status == 200 and json.loads(body)["data"]["status"] == "completed"

        first = create(1)
        assert wait_until(lambda: completed(first), 60), worker.output() + scheduler.output()
        # A later timer delivered after it: a duplicate of the first would have shown up by then.
        second = create(1)
        assert wait_until(lambda: completed(second), 60), worker.output()
        arrivals = receiver.for_timer(first)
        assert len(arrivals) == 1, receiver.count_by_timer()
        assert arrivals[0].body == {"from": "wheel"}
        assert arrivals[0].headers["User-Agent"] == f"timers/{__version__}"
    finally:
        for proc in reversed(running):
            proc.stop()
        receiver.stop()
