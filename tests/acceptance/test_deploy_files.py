"""The Procfile's commands come up against the test services; docker-compose.yml is valid."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from tests.support import processes
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.embedded import free_port

PROCFILE = processes.ROOT / "Procfile"

# What each process prints once it is up.
READY = {
    "release": None,  # runs to completion
    "api": "Application startup complete",
    "scheduler": "scheduler started",
    "worker": "ready",
    "flower": "Visit me at",
}


def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_has_the_four_processes_and_the_release_step() -> None:
    assert set(procfile()) == set(READY)


def test_each_procfile_command_comes_up(services: Services, database_url: str) -> None:
    port, flower_port = free_port(), free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_database(13),
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "API_KEY": API_KEY,
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "PATH": f"{processes.BIN}{os.pathsep}{os.environ['PATH']}",
    }
    commands = procfile()
    release = subprocess.run(
        ["bash", "-c", commands["release"]],
        env={**os.environ, **env},
        cwd=processes.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert release.returncode == 0, release.stderr
    started = []
    try:
        for name, command in commands.items():
            if READY[name] is None:
                continue
            argv = shlex.split(command)
            started.append((name, processes.Process(name, argv, env)))
        for name, proc in started:
            assert proc.wait_for_output(READY[name] or "", 60), f"{name}:\n{proc.output()}"
            assert proc.popen.poll() is None, f"{name} exited:\n{proc.output()}"
    finally:
        for _, proc in started:
            proc.stop()


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_is_valid_and_keeps_flower_private() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")

    def config(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "config"],
            cwd=processes.ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = config(API_KEY="k" * 32, FLOWER_BASIC_AUTH="admin:secret")
    assert result.returncode == 0, result.stderr
    for service in ("postgres", "redis", "migrate", "api", "scheduler", "worker", "flower"):
        assert f"  {service}:" in result.stdout
    assert "service_completed_successfully" in result.stdout
    assert "service_healthy" in result.stdout
    # Flower can shut workers down: behind a password, and on this host's loopback only.
    assert "FLOWER_BASIC_AUTH: admin:secret" in result.stdout
    assert "127.0.0.1:5555:5555" in result.stdout
    refused = config(API_KEY="k" * 32, FLOWER_BASIC_AUTH="")
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stderr
