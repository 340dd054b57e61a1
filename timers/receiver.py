"""A small HTTP callback receiver: records every POST it gets, for `timers dev`, `timers demo`
and trying callbacks out.

Paths choose the answer: `/status/<code>` answers that code, `/hang` never answers (until the
receiver stops), `/slow/<seconds>` answers 200 after that long, `/status/<code>/retry-after/<s>`
adds a `Retry-After`, `/sequence/503,503,200` answers a timer's n-th call with the n-th code, `/trickle` sends its answer one
byte a second (never finishing), `/big/<bytes>` answers 200 with a body that long; anything else
answers 200.
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


class CallbackReceiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_arrival: Callable[[Arrival], None] | None = None,
    ) -> None:
        self.arrivals: list[Arrival] = []
        # For `/big/<bytes>`: how much of the body each timer's connection took before it closed.
        self.body_bytes_sent: dict[str, int] = {}
        # The most requests it was answering at once.
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._on_arrival = on_arrival
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                with receiver._lock:
                    receiver._active += 1
                    receiver.max_concurrent = max(receiver.max_concurrent, receiver._active)
                try:
                    self._answer()
                finally:
                    with receiver._lock:
                        receiver._active -= 1

            def _answer(self) -> None:
                at = datetime.now(UTC)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                receiver._record(Arrival(self.path, dict(self.headers.items()), body, at, raw))
                if self.path.startswith("/hang"):
                    receiver._stopping.wait(3600)
                    return
                if self.path.startswith("/slow/"):
                    receiver._stopping.wait(float(self.path.rsplit("/", 1)[1]))
                if self.path.startswith("/trickle"):
                    self._trickle()
                    return
                if self.path.startswith("/big/"):
                    self._big(int(self.path.rsplit("/", 1)[1]))
                    return
                status, retry_after = 200, None
                if self.path.startswith("/status/"):
                    # /status/<code>, or /status/<code>/retry-after/<seconds>
                    parts = self.path.split("/")
                    status = int(parts[2])
                    if len(parts) > 4 and parts[3] == "retry-after":
                        retry_after = parts[4]
                if self.path.startswith("/sequence/"):
                    # /sequence/503,503,200: the n-th call for a timer gets the n-th status
                    codes = [int(c) for c in self.path.split("/")[2].split(",")]
                    seen = len(receiver.for_timer(self.headers.get("X-Timer-Id", "")))
                    status = codes[min(seen, len(codes)) - 1]
                try:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the caller gave up (timed out, or its process died)

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    while not receiver._stopping.wait(1.0):
                        self.wfile.write(b".")
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up

            def _big(self, size: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                try:
                    while sent < size:
                        piece = chunk[: size - sent]
                        self.wfile.write(piece)
                        sent += len(piece)
                except OSError:
                    pass  # the client closed the connection before reading it all
                receiver.body_bytes_sent[self.headers.get("X-Timer-Id", "")] = sent

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)
        if self._on_arrival is not None:
            self._on_arrival(arrival)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self._lock:
            self.arrivals.clear()

    def for_timer(self, timer_id: object) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.timer_id == str(timer_id)]

    def count_by_timer(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for a in self.arrivals:
                counts[a.timer_id] = counts.get(a.timer_id, 0) + 1
        return counts


def log_arrival(arrival: Arrival) -> None:
    body = json.dumps(arrival.body)
    if len(body) > 200:
        body = body[:200] + "…"
    log.info("callback for timer %s on %s: %s", arrival.timer_id, arrival.path, body)
