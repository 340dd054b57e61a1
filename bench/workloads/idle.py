"""idle: the PostgreSQL statements an idle scheduler sends in a minute, counted by a proxy."""

from __future__ import annotations

import time

from bench.harness import Bench


def idle_statements(bench: Bench, system: str, seconds: float) -> float:
    """Statements per minute the scheduler sends to PostgreSQL while nothing is due, counted by a
    proxy between the two (after a few seconds for the start-up loads)."""
    from sqlalchemy.engine import make_url

    from bench.pgproxy import StatementCounter

    db_name = f"bench_{system.replace('-', '_')}_idle"
    url = make_url(bench.database(db_name))
    socket_dir = url.query.get("host")
    if socket_dir:  # the embedded server listens on a Unix socket
        target: tuple[str, int] | str = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
    else:
        target = (url.host or "127.0.0.1", url.port or 5432)
    proxy = StatementCounter(target)
    proxied = (
        f"postgresql://{url.username}@127.0.0.1:{proxy.port}/{db_name}"
        "?sslmode=disable&gssencmode=disable"
    )
    try:
        bench.start_scheduler(bench.env(proxied), f"{system}-idle", system)
        time.sleep(5)
        before = proxy.statements
        time.sleep(seconds)
        after = proxy.statements
    finally:
        bench.stop_all()
        proxy.close()
    return (after - before) * 60 / seconds
