"""A small HTTP callback receiver: records every POST it gets and answers 200, for `timers dev`,
`timers demo` and trying callbacks out. Subclasses answer otherwise by overriding `respond` (the
tests' fault paths live in tests/support/receiver.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: Any
    at: datetime
    raw: bytes = b""  # the body as it came, byte for byte (what a signature covers)

    @property
    def timer_id(self) -> str:
        return self.headers.get("X-Timer-Id", "")


class _Server(ThreadingHTTPServer):
    # Workers deliver many callbacks at once; the default backlog of 5 would reset connections.
    request_queue_size = 256


def answer(
    request: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None
) -> None:
    """Send `status` with the body `ok` (and `headers`), unless the caller has gone."""
    try:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", "2")
        request.end_headers()
        request.wfile.write(b"ok")
    except OSError:
        pass  # the caller gave up (timed out, or its process died)


class CallbackReceiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_arrival: Callable[[Arrival], None] | None = None,
    ) -> None:
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        # Set by stop(): an answer that is waiting stops waiting.
        self.stopping = threading.Event()
        self._on_arrival = on_arrival
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Read one POST, record it, and answer it (`respond`)."""
        at = datetime.now(UTC)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        arrival = Arrival(request.path, dict(request.headers.items()), body, at, raw)
        with self.lock:
            self.arrivals.append(arrival)
        if self._on_arrival is not None:
            self._on_arrival(arrival)
        self.respond(request, arrival)

    def respond(self, request: BaseHTTPRequestHandler, arrival: Arrival) -> None:
        """Answer a recorded POST: 200 `ok`."""
        answer(request, 200)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.arrivals.clear()

    def for_timer(self, timer_id: object) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.timer_id == str(timer_id)]

    def count_by_timer(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for a in self.arrivals:
                counts[a.timer_id] = counts.get(a.timer_id, 0) + 1
        return counts


def log_arrival(arrival: Arrival) -> None:
    body = json.dumps(arrival.body)
    if len(body) > 200:
        body = body[:200] + "…"
    log.info("callback for timer %s on %s: %s", arrival.timer_id, arrival.path, body)
