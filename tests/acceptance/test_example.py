"""The runnable example (examples/durable_eta) against the real stack, and the README's snippets of
it: each one is part of the example, so running the example runs every snippet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import processes
from tests.support.databases import create_database, drop_database
from tests.support.services import API_KEY, Services
from timers.embedded import free_port

EXAMPLE = processes.ROOT / "examples" / "durable_eta"
SECTION = "## Durable eta for your Celery app"


@pytest.fixture
def stack(services: Services, template_database: str) -> Iterator[dict[str, str]]:
    name = create_database(services, template_database)
    brokers = services.redis_database(3), services.redis_database(4)
    for url in brokers:
        redis.Redis.from_url(url).flushdb()
    port = free_port()
    env = {
        "DATABASE_URL": services.database_url(name),
        "REDIS_URL": brokers[0],
        "TIMERS_TASK_BROKER_URL": brokers[1],
        "TIMERS_CELERY_TASKS": "shop.tasks.*",
        "TIMERS_CELERY_QUEUES": "shop",
        "SHOP_BROKER_URL": brokers[1],
        "API_KEY": API_KEY,
        "TIMERS_API_URL": f"http://127.0.0.1:{port}",
    }
    timers = str(processes.BIN / "timers")
    celery = str(processes.BIN / "celery")
    started = [
        processes.worker(env),
        processes.scheduler(env),
        processes.Process("api", [timers, "api", "--host", "127.0.0.1", "--port", str(port)], env),
        processes.Process(
            "shop",
            [celery, "-A", "examples.durable_eta.shop", "worker", "-Q", "shop", "--loglevel=INFO"],
            env,
        ),
    ]
    try:
        for proc, ready in zip(
            started, ["ready", "scheduler started", "startup complete", "ready"], strict=True
        ):
            assert proc.wait_for_output(ready, 60), proc.output()
        yield env
    finally:
        for proc in started:
            proc.stop()
        for url in brokers:
            redis.Redis.from_url(url).flushdb()
        drop_database(services, name)


def test_the_example_schedules_through_all_three_paths_and_each_task_runs_once(
    stack: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.durable_eta.schedule"],
        cwd=processes.ROOT,
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 ran, 0 twice" in result.stdout


def readme_snippets() -> list[str]:
    readme = (processes.ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def normalized(code: str) -> str:
    return "\n".join(line.rstrip() for line in textwrap.dedent(code).strip().splitlines())


@pytest.mark.parametrize("snippet", readme_snippets() or ["(no snippet found)"])
def test_every_readme_snippet_is_part_of_the_runnable_example(snippet: str) -> None:
    example = "\n".join(normalized(p.read_text()) for p in sorted(EXAMPLE.glob("*.py")))
    lines = [line.strip() for line in normalized(snippet).splitlines() if line.strip()]
    flat_example = "\n".join(line.strip() for line in example.splitlines())
    assert "\n".join(lines) in flat_example, f"not in {EXAMPLE}:\n{snippet}"


def test_the_example_names_the_readme_section() -> None:
    assert Path(EXAMPLE / "schedule.py").is_file()
    assert len(readme_snippets()) >= 3
