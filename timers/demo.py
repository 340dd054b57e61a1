"""`timers demo`: schedule 20 timers over the next 10 seconds against a running stack and watch
them arrive at a receiver started on 127.0.0.1, in a live table."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from rich.console import Console
from rich.live import Live
from rich.table import Table

from timers.receiver import Arrival, CallbackReceiver

ON_TIME = timedelta(seconds=1)


@dataclass
class Row:
    timer_id: str
    due: datetime
    arrival: Arrival | None = None
    status: str = "pending"

    @property
    def lateness(self) -> timedelta | None:
        return None if self.arrival is None else self.arrival.at - self.due


def _table(rows: list[Row]) -> Table:
    table = Table(title="timers demo")
    for column in ("#", "timer", "due (UTC)", "arrived (UTC)", "late (ms)", "status"):
        table.add_column(column, justify="right" if column in ("#", "late (ms)") else "left")
    for i, row in enumerate(rows, 1):
        late = row.lateness
        table.add_row(
            str(i),
            row.timer_id[-12:],
            row.due.strftime("%H:%M:%S.%f")[:-3],
            row.arrival.at.strftime("%H:%M:%S.%f")[:-3] if row.arrival else "",
            f"{late.total_seconds() * 1000:.0f}" if late is not None else "",
            row.status,
        )
    return table


def run_demo(
    api_url: str,
    api_key: str,
    *,
    count: int = 20,
    spread: float = 10.0,
    wait: float = 60.0,
    console: Console | None = None,
) -> int:
    """Returns 0 when every timer was delivered, 1 otherwise."""
    console = console or Console()
    session = requests.Session()
    session.headers["X-API-Key"] = api_key
    receiver = CallbackReceiver().start()
    rows: list[Row] = []
    try:
        start = datetime.now(UTC)
        for i in range(count):
            due = start + timedelta(seconds=spread * (i + 1) / count)
            response = session.post(
                f"{api_url}/timers",
                json={
                    "execute_at": due.isoformat(),
                    "callback_type": "http",
                    "callback_config": {
                        "type": "http",
                        "url": receiver.url(f"/demo/{i + 1}"),
                        "payload": {"demo": i + 1},
                    },
                },
                timeout=10,
            )
            if response.status_code != 201:
                console.print(
                    f"[red]creating a timer failed: {response.status_code} {response.text}"
                )
                return 1
            rows.append(Row(timer_id=response.json()["data"]["id"], due=due))
        deadline = time.monotonic() + spread + wait
        with Live(_table(rows), console=console, refresh_per_second=5) as live:
            while time.monotonic() < deadline:
                for row in rows:
                    if row.arrival is None and (arrived := receiver.for_timer(row.timer_id)):
                        row.arrival = arrived[0]
                        row.status = "delivered"
                live.update(_table(rows))
                if all(r.arrival for r in rows):
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # let the workers record the outcomes
            for row in rows:
                data = session.get(f"{api_url}/timers/{row.timer_id}", timeout=10).json()["data"]
                row.status = data["status"]
            live.update(_table(rows))
    finally:
        receiver.stop()
    fired = [r for r in rows if r.arrival is not None]
    on_time = [r for r in fired if r.lateness is not None and r.lateness <= ON_TIME]
    lost = len(rows) - len(fired)
    lateness_ms = [r.lateness.total_seconds() * 1000 for r in fired if r.lateness is not None]
    summary = f"{len(fired)} fired, {len(on_time)} on time (≤ 1 s late), {lost} lost"
    if lateness_ms:
        summary += (
            f"; lateness median {statistics.median(lateness_ms):.0f} ms, "
            f"max {max(lateness_ms):.0f} ms"
        )
    console.print()
    console.print(summary)
    return 0 if lost == 0 else 1
