"""Receivers that never answer, for the isolation workload: one process listening on COUNT ports of
127.0.0.1 (COUNT distinct host:port destinations). It accepts every connection and reads whatever
is sent, but never writes a byte back, so a client waits until its own timeout.

It writes the ports it listens on to `OUTPUT` (a JSON list) before printing "ready", keeps the number
of connections accepted in `OUTPUT.count` (every 0.5 s), and exits by itself after LIFETIME seconds
(or on SIGTERM), closing every connection it holds.

    python -m bench.hang COUNT LIFETIME OUTPUT.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path


async def main() -> None:
    count, lifetime, output = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    counter = output.with_suffix(".count")
    accepted = 0
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.add(writer)
        try:
            while await reader.read(65536):
                pass  # read and drop the request; never answer
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client gave up, or this process is exiting: nothing to report
        finally:
            writers.discard(writer)
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(count)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    output.write_text(json.dumps(ports))
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    stop_at = loop.time() + lifetime
    print(f"ready: {count} ports, exiting after {lifetime:g}s", flush=True)
    while not done.is_set() and loop.time() < stop_at:
        counter.write_text(str(accepted))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)
    counter.write_text(str(accepted))
    for server in servers:
        server.close()
    for writer in list(writers):
        writer.close()
    await asyncio.sleep(0.2)  # let the handlers see their connections closed
    print(f"exiting: {accepted} connections accepted", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
