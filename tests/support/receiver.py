"""The tests' callback receiver, and waiting for it.

`Receiver` is the product's receiver (timers.receiver) with fault paths: `/status/<code>` answers
that code, `/hang` never answers (until the receiver stops), `/slow/<seconds>` answers 200 after
that long, `/status/<code>/retry-after/<s>` adds a `Retry-After`, `/sequence/503,503,200` answers a
timer's n-th call with the n-th code, `/trickle` sends its answer one byte a second (never
finishing), `/big/<bytes>` answers 200 with a body that long; anything else answers 200. It also
keeps the most requests it was answering at once (`max_concurrent`).
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from timers.receiver import Arrival, CallbackReceiver, answer

__all__ = ["Receiver", "wait_until"]


class Receiver(CallbackReceiver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # For `/big/<bytes>`: how much of the body each timer's connection took before it closed.
        self.body_bytes_sent: dict[str, int] = {}
        # The most requests it was answering at once.
        self.max_concurrent = 0
        self._active = 0

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            super().handle(request)
        finally:
            with self.lock:
                self._active -= 1

    def respond(self, request: BaseHTTPRequestHandler, arrival: Arrival) -> None:
        path = arrival.path
        if path.startswith("/hang"):
            self.stopping.wait(3600)
            return
        if path.startswith("/slow/"):
            self.stopping.wait(float(path.rsplit("/", 1)[1]))
        if path.startswith("/trickle"):
            self._trickle(request)
            return
        if path.startswith("/big/"):
            self._big(request, arrival, int(path.rsplit("/", 1)[1]))
            return
        status, headers = 200, {}
        if path.startswith("/status/"):
            # /status/<code>, or /status/<code>/retry-after/<seconds>
            parts = path.split("/")
            status = int(parts[2])
            if len(parts) > 4 and parts[3] == "retry-after":
                headers["Retry-After"] = parts[4]
        if path.startswith("/sequence/"):
            # /sequence/503,503,200: the n-th call for a timer gets the n-th status
            codes = [int(c) for c in path.split("/")[2].split(",")]
            seen = len(self.for_timer(arrival.timer_id))
            status = codes[min(seen, len(codes)) - 1]
        answer(request, status, headers)

    def _trickle(self, request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "100000")
        request.end_headers()
        try:
            while not self.stopping.wait(1.0):
                request.wfile.write(b".")
                request.wfile.flush()
        except OSError:
            pass  # the client gave up

    def _big(self, request: BaseHTTPRequestHandler, arrival: Arrival, size: int) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(size))
        request.end_headers()
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < size:
                piece = chunk[: size - sent]
                request.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass  # the client closed the connection before reading it all
        self.body_bytes_sent[arrival.timer_id] = sent

    def start(self) -> Receiver:
        super().start()
        return self


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
