"""The real commands as subprocesses (worker, scheduler), with their output kept for failures."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_workers = itertools.count()
BIN = Path(sys.executable).parent


class Process:
    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the process's lifetime
            prefix=f"timers-{name}-", suffix=".log", delete=False
        )
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the process, then its whole group with SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # children left behind, if any
        self.log.close()
        return self.popen.returncode


def worker(env: Mapping[str, str], *extra: str) -> Process:
    """`celery -A timers.celery_app worker` exactly as shipped (pool and concurrency from
    celeryconfig.py), with a node name of its own and any `extra` arguments."""
    return Process(
        "worker",
        [
            str(BIN / "celery"),
            "-A",
            "timers.celery_app",
            "worker",
            "--loglevel=INFO",
            "-n",
            f"test-{os.getpid()}-{next(_workers)}@%h",
            *extra,
        ],
        env,
    )


def scheduler(env: Mapping[str, str], name: str = "scheduler") -> Process:
    return Process(name, [sys.executable, "-m", "timers.scheduler"], env)
