"""The timers page at `/ui` in a real browser (Debian's chromium, driven by Playwright) against the
real `timers api` over HTTP, with a real scheduler, worker and Redis broker delivering to a receiver
on 127.0.0.1. The stack and the timers are made once for the module; each test opens the page in a
fresh browser context (so with no key in its session storage)."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)

from tests.support import processes, skips
from tests.support.databases import create_database, drop_database
from tests.support.receiver import Receiver, wait_until
from tests.support.services import API_KEY, LOCAL_NETWORKS, Services
from timers.embedded import free_port

FLOWER_URL = "http://flower.example:5555"
WRONG_KEY = "not-the-key-0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        skips.skip(skips.BROWSER, "no chromium browser on this machine (Debian's chromium)")
    expect.set_options(timeout=15_000)  # the page refreshes every 5 s
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to the API with the key; the status and the envelope's data."""
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)["data"]
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def create(base: str, in_seconds: float, config: dict[str, Any], metadata: dict[str, Any]) -> str:
    status, data = call(
        base,
        "POST",
        "/timers",
        {
            "execute_at": (datetime.now(UTC) + timedelta(seconds=in_seconds)).isoformat(),
            "callback_type": config["type"],
            "callback_config": config,
            "metadata": metadata,
        },
    )
    assert status == 201, data
    return str(data["id"])


@dataclass
class Stack:
    base: str  # the API, which also serves the page
    pending: str  # an http timer due in an hour
    celery: str  # a celery timer due in two hours
    failed: str  # a timer whose receiver answered 410 Gone (not retried): failed, one attempt


@pytest.fixture(scope="module")
def stack(services: Services, template_database: str) -> Iterator[Stack]:
    database = create_database(services, template_database)
    broker = services.redis_database(3)
    redis.Redis.from_url(broker).flushdb()
    receiver = Receiver().start()
    env = {
        "DATABASE_URL": services.database_url(database),
        "REDIS_URL": broker,
        "API_KEY": API_KEY,
        "TIMERS_ALLOWED_NETWORKS": LOCAL_NETWORKS,
        "TIMERS_CALLBACK_TIMEOUT": "5",
        "TIMERS_FLOWER_URL": FLOWER_URL,
        # The celery timer is for the example shop, on a broker of its own.
        "TIMERS_TASK_BROKER_URL": services.redis_database(4),
        "TIMERS_CELERY_TASKS": "shop.tasks.*",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Started together; the worker takes longest to be ready.
    api = processes.Process(
        "api",
        [str(processes.BIN / "timers"), "api", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    worker = processes.worker(env)
    scheduler = processes.scheduler(env)
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                    return bool(json.load(response)["data"]["status"] == "up")
            except OSError:
                return False

        assert wait_until(healthy, 30), api.output()
        assert worker.wait_for_output("ready", 60), worker.output()
        assert scheduler.wait_for_output("scheduler started", 30), scheduler.output()

        http = {"type": "http", "url": "https://receiver.example/hook", "payload": {"order": 1}}
        celery = {"type": "celery", "task": "shop.tasks.expire_order", "args": [1]}
        gone = {"type": "http", "url": receiver.url("/status/410")}
        failed = create(base, 1, gone, {"suite": "ui", "case": "failure"})
        pending = create(base, 3600, http, {"suite": "ui", "case": "next", "note": "<b>x</b>"})
        celery_id = create(base, 7200, celery, {"suite": "ui", "case": "celery"})

        def has_failed() -> bool:
            return bool(call(base, "GET", f"/timers/{failed}")[1]["status"] == "failed")

        assert wait_until(has_failed, 30, interval=0.2), (
            call(base, "GET", f"/timers/{failed}"),
            worker.output(),
            scheduler.output(),
        )
        yield Stack(base=base, pending=pending, celery=celery_id, failed=failed)
    finally:
        scheduler.stop()
        worker.stop()
        api.stop()
        receiver.stop()
        redis.Redis.from_url(broker).flushdb()
        drop_database(services, database)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A page in a fresh context; fails the test on a script error or a refused resource (CSP)."""
    context = browser.new_context()
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def refused(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(f"console: {message.text}")

    tab.on("console", refused)
    yield tab
    context.close()
    assert not problems, problems


def open_with_key(page: Page, base: str, key: str = API_KEY) -> Response:
    response = page.goto(f"{base}/ui")
    assert response is not None and response.status == 200
    expect(page.locator("#key-input")).to_be_visible()
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    return response


def row(page: Page, section: str, timer_id: str) -> Locator:
    return page.locator(f'{section} tr[data-timer-id="{timer_id}"]')


def test_a_wrong_key_shows_the_401_message_and_the_key_form_again(page: Page, stack: Stack) -> None:
    response = open_with_key(page, stack.base, WRONG_KEY)
    expect(page.locator("#notice")).to_contain_text("API key was refused")
    expect(page.locator("#notice")).to_contain_text("invalid API key")
    expect(page.locator("#key-input")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    headers = response.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"

    # The right key then opens the page, and it is in no URL and no cookie.
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()
    assert page.url == f"{stack.base}/ui"
    assert page.context.cookies() == []


def test_counts_and_next_to_fire_show_the_timers_made_through_the_api(
    page: Page, stack: Stack
) -> None:
    open_with_key(page, stack.base)
    expect(page.locator('#counts td[data-status="pending"]')).to_have_text("2")
    expect(page.locator('#counts td[data-status="failed"]')).to_have_text("1")
    expect(page.locator("#backlog-count")).to_have_text("0")
    expect(page.locator("#updated")).to_have_text(re.compile(r"updated at \d{4}-\d\d-\d\dT.*Z"))

    pending = row(page, "#next", stack.pending)
    expect(pending.locator('td[data-column="type"]')).to_have_text("http")
    expect(pending).to_contain_text(re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"))
    # Data is text, never markup.
    expect(pending).to_contain_text('"note":"<b>x</b>"')
    assert page.locator("#next b").count() == 0
    expect(page.locator("#next tbody tr").first).to_have_attribute("data-timer-id", stack.pending)

    # Flower: its task list in the header, and a task link for a celery timer only.
    expect(page.locator("#flower-link")).to_have_attribute("href", f"{FLOWER_URL}/tasks")
    expect(row(page, "#next", stack.celery).locator("a.flower")).to_have_attribute(
        "href", f"{FLOWER_URL}/task/{stack.celery}"
    )
    assert pending.locator("a.flower").count() == 0

    # A timer made while the page is open shows at the next refresh, without a reload.
    later = create(
        stack.base,
        1800,
        {"type": "http", "url": "https://receiver.example/later"},
        {"suite": "ui", "case": "later"},
    )
    expect(row(page, "#next", later)).to_be_visible()
    expect(page.locator('#counts td[data-status="pending"]')).to_have_text("3")


def test_recent_failures_show_the_last_error(page: Page, stack: Stack) -> None:
    open_with_key(page, stack.base)
    failed = row(page, "#failures", stack.failed)
    expect(failed).to_contain_text("HTTP 410")
    expect(failed.locator('td[data-column="attempts"]')).to_have_text("1")
    # The failed delivery is one point per series in the lateness chart.
    expect(page.locator("#lateness-chart circle.p99")).to_have_count(1)
    expect(page.locator("#lateness-empty")).to_be_hidden()


def test_search_by_id_shows_the_timer_with_its_history(page: Page, stack: Stack) -> None:
    open_with_key(page, stack.base)
    expect(page.locator("#dashboard")).to_be_visible()
    page.fill("#search-input", stack.failed)
    page.press("#search-input", "Enter")
    detail = page.locator(f'#search-results article[data-timer-id="{stack.failed}"]')
    expect(detail.locator('dd[data-field="status"]')).to_have_text("failed")
    expect(detail.locator('dd[data-field="last_error"]')).to_have_text("HTTP 410")
    history = detail.locator("table.history tbody tr")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("failed")
    expect(history).to_contain_text("410")

    # A timer's id in a list opens it here too.
    row(page, "#next", stack.pending).locator("button.timer-id").click()
    detail = page.locator(f'#search-results article[data-timer-id="{stack.pending}"]')
    expect(detail.locator('dd[data-field="status"]')).to_have_text("pending")
    expect(detail).to_contain_text("No attempts yet.")

    page.fill("#search-input", "0190a6f2-0000-7000-8000-000000000000")
    page.press("#search-input", "Enter")
    expect(page.locator("#search-results")).to_contain_text("No timer with id")


def test_search_by_metadata_lists_the_timers_that_contain_it(page: Page, stack: Stack) -> None:
    open_with_key(page, stack.base)
    expect(page.locator("#dashboard")).to_be_visible()
    page.fill("#search-input", '{"case": "next"}')
    page.press("#search-input", "Enter")
    results = page.locator("#search-results tbody tr")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-timer-id", stack.pending)

    page.fill("#search-input", '{"suite": "ui", "case": "failure"}')
    page.press("#search-input", "Enter")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-timer-id", stack.failed)
    expect(results.first).to_contain_text("HTTP 410")

    page.fill("#search-input", "tenant acme")
    page.press("#search-input", "Enter")
    expect(page.locator("#search-results")).to_contain_text("Enter a timer id")


def test_schedules_show_their_cron_zone_state_and_next_fire_time(page: Page, stack: Stack) -> None:
    hook = {"type": "http", "url": "https://receiver.example/weekly"}
    made = []
    for name, paused in (("weekly report", False), ("held", True)):
        status, data = call(
            stack.base,
            "POST",
            "/schedules",
            {
                "name": name,
                "cron": "0 9 * * 1",
                "timezone": "Europe/Paris",
                "paused": paused,
                "callback_type": "http",
                "callback_config": hook,
            },
        )
        assert status == 201, data
        made.append(data)
    try:
        open_with_key(page, stack.base)
        active = page.locator(f'#schedules tr[data-schedule-id="{made[0]["id"]}"]')
        expect(active.locator('td[data-column="name"]')).to_have_text("weekly report")
        expect(active.locator('td[data-column="when"]')).to_have_text("0 9 * * 1")
        expect(active.locator('td[data-column="zone"]')).to_have_text("Europe/Paris")
        expect(active.locator('td[data-column="state"]')).to_have_text("active")
        expect(active.locator('td[data-column="next fire"]')).to_have_text(
            re.compile(r"\d{4}-\d\d-\d\dT0[78]:00:00\.000Z")  # 09:00 in Paris, in UTC
        )
        held = page.locator(f'#schedules tr[data-schedule-id="{made[1]["id"]}"]')
        expect(held.locator('td[data-column="state"]')).to_have_text("paused")
        expect(held.locator('td[data-column="next fire"]')).to_have_text("–")
    finally:
        for schedule in made:
            call(stack.base, "DELETE", f"/schedules/{schedule['id']}")
