"""The callback receiver for the benchmark, in a process of its own so that it never competes with
the driver for the GIL. On SIGTERM it writes `{timer_id: [arrival unix times]}` to the given file.

    python -m bench.receiver PORT OUTPUT.json
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from timers.receiver import CallbackReceiver


def main() -> None:
    port, output = int(sys.argv[1]), sys.argv[2]
    receiver = CallbackReceiver(port=port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    receiver.start()
    print("ready", flush=True)
    done.wait()
    arrivals: dict[str, list[float]] = {}
    for arrival in receiver.arrivals:
        arrivals.setdefault(arrival.timer_id, []).append(arrival.at.timestamp())
    with open(output, "w") as f:
        json.dump(arrivals, f)
    receiver.stop()


if __name__ == "__main__":
    main()
