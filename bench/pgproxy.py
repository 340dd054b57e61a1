"""A TCP proxy in front of PostgreSQL that counts the statements its clients send: every simple
query message ('Q', which is all psycopg2 sends) after the startup message. It measures what a
process asks of the database from the outside, with no help from the process or the server.

Clients must connect without TLS (sslmode=disable&gssencmode=disable), so the messages are visible.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any


class StatementCounter:
    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or a Unix socket path
        self.statements = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            return upstream
        return socket.create_connection(self.target)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            threading.Thread(
                target=self._client_to_server, args=(client, upstream), daemon=True
            ).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                _close(s)

    def _client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False
        try:
            while chunk := client.recv(65536):
                upstream.sendall(chunk)
                buffer += chunk
                while True:
                    if not started:  # the startup message: length, then body, no type byte
                        if len(buffer) < 4:
                            break
                        (length,) = struct.unpack("!I", buffer[:4])
                        if len(buffer) < length:
                            break
                        buffer, started = buffer[length:], True
                        continue
                    if len(buffer) < 5:
                        break
                    (length,) = struct.unpack("!I", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    if buffer[:1] == b"Q":
                        with self._lock:
                            self.statements += 1
                    buffer = buffer[1 + length :]
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                _close(s)

    def close(self) -> None:
        self._closed.set()
        _close(self._listener)


def _close(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
