"""The callback receiver for the benchmark: a minimal asyncio HTTP/1.1 server in a process of its
own, so that the receiver is never what limits the systems under test. It answers 200 to every
POST, keeps connections alive, records `X-Timer-Id` and the arrival time, keeps the number of
arrivals in `OUTPUT.count` (every 0.2 s), and on SIGTERM writes `{timer_id: [unix times]}` to
`OUTPUT` and `{"requests", "rejected", "signed"}` to `OUTPUT.stats` (JSON).

A POST to a path starting with `/flaky` is answered 503 (no `Retry-After`) the first time its
`X-Timer-Id` arrives, 200 afterwards (the flaky workload); `rejected` counts those 503s. `signed`
counts the requests carrying a `webhook-signature` header (Standard Webhooks).

    python -m bench.receiver PORT OUTPUT.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"
    b"flaky"
)


async def main() -> None:
    port, output = int(sys.argv[1]), Path(sys.argv[2])
    counter = output.with_suffix(".count")
    arrivals: dict[str, list[float]] = {}
    total = rejected = signed = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total, rejected, signed
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.time()
                lines = head.split(b"\r\n")
                parts = lines[0].split(b" ")
                path = parts[1] if len(parts) > 1 else b"/"
                length, timer_id = 0, ""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    key = name.strip().lower()
                    if key == b"content-length":
                        length = int(value)
                    elif key == b"x-timer-id":
                        timer_id = value.strip().decode()
                    elif key == b"webhook-signature":
                        signed += 1
                if length:
                    await reader.readexactly(length)
                seen = timer_id in arrivals
                arrivals.setdefault(timer_id, []).append(at)
                total += 1
                if path.startswith(b"/flaky") and not seen:
                    rejected += 1
                    writer.write(UNAVAILABLE)
                else:
                    writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    print("ready", flush=True)
    while not done.is_set():
        counter.write_text(str(total))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.2)
    server.close()
    output.write_text(json.dumps(arrivals))
    output.with_suffix(".stats").write_text(
        json.dumps({"requests": total, "rejected": rejected, "signed": signed})
    )


if __name__ == "__main__":
    asyncio.run(main())
