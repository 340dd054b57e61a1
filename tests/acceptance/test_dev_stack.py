"""`timers dev` as a newcomer runs it (what `make run` calls): embedded PostgreSQL and Redis, every
process up, the README's examples and `timers demo` against it, Flower, then a clean stop and a
restart that keeps the data."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import processes
from tests.support.receiver import wait_until
from timers.embedded import free_port

README = processes.ROOT / "README.md"


def dev_env(home: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "API_KEY": "",
        "TIMERS_HOME": str(home),
        "PORT": str(free_port()),
        "TIMERS_FLOWER_PORT": str(free_port()),
        "TIMERS_RECEIVER_PORT": str(free_port()),
    }


def start_dev(env: dict[str, str]) -> processes.Process:
    proc = processes.Process("dev", [str(processes.BIN / "timers"), "dev"], env)
    assert proc.wait_for_output("timers is up.", 180), proc.output()
    return proc


def family(proc: processes.Process) -> list[psutil.Process]:
    """The dev process's descendants plus the embedded PostgreSQL (which daemonizes)."""
    members = psutil.Process(proc.popen.pid).children(recursive=True)
    return members


def postmaster(home: Path) -> psutil.Process | None:
    pid_file = home / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return None
    return psutil.Process(int(pid_file.read_text().split()[0]))


def stop_dev(proc: processes.Process, sig: int = signal.SIGINT) -> int:
    proc.signal(sig)
    try:
        return proc.popen.wait(60)
    finally:
        proc.stop()


def readme_examples() -> str:
    """The `sh` blocks of the README's API section and of docs/api.md (its sequel: redrive and
    idempotent creates), as one script."""
    text = README.read_text()
    api_section = text.split("## API", 1)[1].split("\n## ", 1)[0]
    sequel = (README.parent / "docs" / "api.md").read_text()
    return "\n".join(re.findall(r"```sh\n(.*?)```", api_section + sequel, flags=re.S))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev-home")


@pytest.fixture(scope="module")
def stack(home: Path) -> Iterator[tuple[processes.Process, dict[str, str]]]:
    env = dev_env(home)
    proc = start_dev(env)
    yield proc, env
    if proc.popen.poll() is None:
        stop_dev(proc)


def api_key(home: Path) -> str:
    return (home / "api_key").read_text().strip()


def test_readme_examples_run_against_the_stack(
    stack: tuple[processes.Process, dict[str, str]], home: Path
) -> None:
    _, env = stack
    script = "set -euo pipefail\n" + readme_examples()
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "API": f"http://127.0.0.1:{env['PORT']}", "API_KEY": api_key(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every response but the id echo (8 of them) is an envelope with code 0, except the redrive: it
    # runs after the example timer was canceled, and only failed timers can be redriven.
    assert result.stdout.count('"code":0') == 8, result.stdout
    assert result.stdout.count('"code":2') == 1, result.stdout
    assert "only failed timers can be retried" in result.stdout


def test_banner_curl_creates_a_timer_that_calls_back(
    stack: tuple[processes.Process, dict[str, str]],
) -> None:
    proc, _ = stack
    banner = proc.output().split("timers is up.", 1)[1]
    curl = banner.split("calls back in 10 seconds:\n", 1)[1].split("\n\n", 1)[0]
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    timer_id = json.loads(result.stdout)["data"]["id"]
    assert wait_until(lambda: f"callback for timer {timer_id}" in proc.output(), 40), proc.output()[
        -3000:
    ]


def test_demo_reports_20_fired_and_0_lost(stack: tuple[processes.Process, dict[str, str]]) -> None:
    _, env = stack
    result = subprocess.run(
        [str(processes.BIN / "timers"), "demo"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 fired" in result.stdout and "0 lost" in result.stdout, result.stdout


def test_flower_sees_the_worker_and_the_callback_tasks_behind_the_api_key(
    stack: tuple[processes.Process, dict[str, str]], home: Path
) -> None:
    _, env = stack
    flower = f"http://127.0.0.1:{env['TIMERS_FLOWER_PORT']}"
    login = base64.b64encode(f"timers:{api_key(home)}".encode()).decode()

    def get(path: str, authorization: str | None = f"Basic {login}") -> object:
        request = urllib.request.Request(flower + path)
        if authorization:
            request.add_header("Authorization", authorization)
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.load(response)

    # Without the key, Flower's pages and its API (which can shut workers down) are refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        get("/api/workers", authorization=None)
    assert refused.value.code == 401
    workers = get("/api/workers?refresh=1")
    assert isinstance(workers, dict) and any(name.startswith("dev@") for name in workers)
    tasks = get("/api/tasks?limit=100")
    assert isinstance(tasks, dict)
    assert any(t["name"] == "timers.execute_callbacks" for t in tasks.values())


def test_the_dev_key_file_is_private_and_long_enough(home: Path) -> None:
    key_file = home / "api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(api_key(home)) >= 32


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(
    stack: tuple[processes.Process, dict[str, str]], home: Path
) -> None:
    proc, env = stack
    children = family(proc)
    assert len(children) >= 5
    pg = postmaster(home)
    assert pg is not None and pg.is_running()
    assert stop_dev(proc) == 0
    assert wait_until(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 10
    )
    assert wait_until(lambda: not pg.is_running(), 10)
    assert "stopped" in proc.output()

    again = start_dev(env)  # same home: no stale lock or pid file may stop it
    try:
        key = api_key(home)
        request = urllib.request.Request(
            f"http://127.0.0.1:{env['PORT']}/timers?limit=1&total=true", headers={"X-API-Key": key}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["data"]["total"] >= 21  # the demo's and the README's
    finally:
        assert stop_dev(again, signal.SIGTERM) == 0
