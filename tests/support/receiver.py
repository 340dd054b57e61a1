"""A real HTTP callback receiver on 127.0.0.1 that records every request it gets.

Paths choose the answer: `/ok` → 200, `/status/<code>` → that code, `/hang` → no answer until the
receiver stops (longer than any callback timeout in the tests).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: Any
    at: datetime

    @property
    def timer_id(self) -> str:
        return self.headers.get("X-Timer-Id", "")


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                arrival = Arrival(self.path, dict(self.headers.items()), body, datetime.now(UTC))
                with receiver._lock:
                    receiver.arrivals.append(arrival)
                if self.path.startswith("/hang"):
                    receiver._stopping.wait(60)
                    return
                status = 200
                if self.path.startswith("/status/"):
                    status = int(self.path.rsplit("/", 1)[1])
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
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


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
