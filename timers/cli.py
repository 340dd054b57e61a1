"""The `timers` command: api, migrate, purge, scheduler, dev, demo, receiver."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from timers.config import ConfigError, Settings, environment_help, load_settings, parse_duration
from timers.logs import configure_logging
from timers.storage import StoreError


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from timers.migrations import Refused, downgrade, upgrade
    from timers.storage import StoreError

    url = settings.require_database_url()
    try:
        if args.downgrade:
            downgrade(url, args.downgrade)
        else:
            for line in upgrade(url, args.revision):
                print("timers migrate:", line, flush=True)
    except (StoreError, Refused) as exc:
        print(f"timers migrate: cannot migrate: {exc}", file=sys.stderr)
        return 1
    print("timers migrate: database is at", args.downgrade or args.revision)
    return 0


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from timers.api import create_app

    # In JSON, uvicorn's loggers go through the root logger's JSON handler instead of its own.
    extra: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port or settings.port,
        "log_level": settings.log_level.lower(),
        **extra,
    }
    try:
        workers = args.workers if args.workers is not None else _default_workers()
    except argparse.ArgumentTypeError as exc:
        print(f"timers api: WEB_CONCURRENCY: {exc}", file=sys.stderr)
        return 2
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
        return 0
    # Several processes, each building its app from the same environment (`timers.api:worker_app`);
    # the database is checked here first, so that a wrong DATABASE_URL fails once, not per worker.
    from timers.store import TimerStore, database_engine

    engine = database_engine(settings.require_database_url())
    try:
        TimerStore(engine).ping()
    except StoreError as exc:
        print(f"timers api: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    settings.require_api_keys()
    uvicorn.run("timers.api:worker_app", factory=True, workers=workers, **common)
    return 0


def _default_workers() -> int:
    """WEB_CONCURRENCY (uvicorn's and gunicorn's name) when set, else 1."""
    given = os.environ.get("WEB_CONCURRENCY", "").strip()
    return _positive(given) if given else 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


def _purge(settings: Settings, args: argparse.Namespace) -> int:
    from timers.store import TimerStore, database_engine

    try:
        older_than = parse_duration(args.older_than)
    except ValueError:
        print(
            f"timers purge: --older-than: a duration such as 30d, 12h, 90m or 3600 (seconds), "
            f"got {args.older_than!r}",
            file=sys.stderr,
        )
        return 2
    engine = database_engine(settings.require_database_url())
    store = TimerStore(engine)
    deleted, at = 0, None
    try:
        while True:
            batch = store.purge_finished(older_than, args.batch, at)
            if batch is None:  # a scheduler's retention is purging: take turns
                time.sleep(1.0)
                continue
            deleted += batch.deleted
            if batch.next is None:
                break
            at = batch.next
    except StoreError as exc:
        print(f"timers purge: {exc} (deleted {deleted} before that)", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"timers purge: deleted {deleted} finished timers older than {args.older_than}")
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from timers.scheduler.__main__ import main as scheduler_main

    return scheduler_main([])


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from timers.dev import run

    return run(settings)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    import requests

    from timers.demo import run_demo
    from timers.dev import api_key_for

    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    try:
        return run_demo(url, args.api_key or api_key_for(settings), count=args.count)
    except requests.ConnectionError:
        print(
            f"timers demo: cannot reach the API at {url}: start it with `make run`", file=sys.stderr
        )
        return 1


def _receiver(settings: Settings, args: argparse.Namespace) -> int:
    from timers.receiver import CallbackReceiver, log_arrival

    receiver = CallbackReceiver(args.host, args.port, on_arrival=log_arrival)
    print(f"timers receiver: listening on http://{args.host}:{receiver.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.server.serve_forever()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timers",
        description="Durable one-shot timers. Configuration comes from the environment.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply the database migrations (Alembic)")
    migrate.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead")
    migrate.set_defaults(run=_migrate)

    api = commands.add_parser("api", help="serve the REST API with uvicorn")
    api.add_argument("--host", default="0.0.0.0", help="address to bind (0.0.0.0)")
    api.add_argument("--port", type=int, help="port (default: PORT, else 8080)")
    api.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="API processes (default: WEB_CONCURRENCY, else 1); one per CPU serves the most "
        "creates per second (docs/scaling.md)",
    )
    api.set_defaults(run=_api)

    purge = commands.add_parser(
        "purge",
        help="delete finished timers (completed, failed, canceled) older than a duration, in "
        "batches; the scheduler does this by itself past TIMERS_RETENTION",
    )
    purge.add_argument(
        "--older-than", required=True, help="e.g. 30d, 12h, 90m, or seconds (0: every finished one)"
    )
    purge.add_argument("--batch", type=_positive, default=1000, help="rows per statement (1000)")
    purge.set_defaults(run=_purge)

    scheduler = commands.add_parser(
        "scheduler", help="run the scheduler (python -m timers.scheduler)"
    )
    scheduler.set_defaults(run=_scheduler)

    dev = commands.add_parser(
        "dev",
        help="run the whole stack here: embedded PostgreSQL and Redis (unless DATABASE_URL / "
        "REDIS_URL are set), migrations, API, scheduler, worker and Flower",
    )
    dev.set_defaults(run=_dev)

    demo = commands.add_parser(
        "demo", help="against a running stack: schedule 20 timers over 10 s and watch them arrive"
    )
    demo.add_argument("--url", help="API base URL (default http://127.0.0.1:PORT)")
    demo.add_argument("--api-key", help="API key (default API_KEY, else the one timers dev made)")
    demo.add_argument("--count", type=int, default=20, help="how many timers (20)")
    demo.set_defaults(run=_demo)

    receiver = commands.add_parser(
        "receiver", help="a callback receiver that logs every POST it gets (for trying timers out)"
    )
    receiver.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    receiver.add_argument("--port", type=int, default=8081, help="port (8081)")
    receiver.set_defaults(run=_receiver)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return int(args.run(settings, args))
    except ConfigError as exc:
        print(f"timers {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
