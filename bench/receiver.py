"""The callback receiver for the benchmark, in a process of its own so that it never competes with
the driver for the GIL. It keeps the number of arrivals in `OUTPUT.count` (every 0.2 s) and on
SIGTERM writes `{timer_id: [arrival unix times]}` to `OUTPUT`.

    python -m bench.receiver PORT OUTPUT.json
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from timers.receiver import CallbackReceiver


def main() -> None:
    port, output = int(sys.argv[1]), Path(sys.argv[2])
    counter = output.with_suffix(".count")
    receiver = CallbackReceiver(port=port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    receiver.start()
    print("ready", flush=True)
    while not done.wait(0.2):
        counter.write_text(str(len(receiver.arrivals)))
    arrivals: dict[str, list[float]] = {}
    for arrival in receiver.arrivals:
        arrivals.setdefault(arrival.timer_id, []).append(arrival.at.timestamp())
    output.write_text(json.dumps(arrivals))
    receiver.stop()


if __name__ == "__main__":
    main()
