"""A client for the REST API, with the same methods as the Python API (`timers.Timers`), for
processes that reach timers only over HTTP. Errors are raised as exceptions (`timers.errors`):
InvalidTimer (a 400), Unauthorized (401), TimerNotFound (404), TimerNotPending (a 400 about a
timer that is no longer pending), TimersUnavailable (500 or no answer).

    from timers.client import Client

    client = Client("https://timers.internal", api_key=os.environ["TIMERS_API_KEY"])
    timer = client.schedule("shop.tasks.expire_order", args=[42], countdown=3600)
    client.cancel(timer.id)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from timers.errors import (
    InvalidTimer,
    TimerNotFound,
    TimerNotPending,
    TimersUnavailable,
    Unauthorized,
)
from timers.library import celery_config
from timers.models import Timer, TimerStatus


class Client:
    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["X-API-Key"] = api_key

    def schedule(
        self,
        target: Any,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Timer:
        """As `Timers.schedule`, through the API (no `connection`: the API has its own)."""
        config = celery_config(target, args, kwargs, queue, priority, headers)
        body: dict[str, Any] = {
            "execute_at": _when(eta, countdown).isoformat(),
            "callback_type": "celery",
            "callback_config": config,
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        created = self._call("POST", "/timers", json=body)
        return self.get(created["id"])

    def get(self, timer_id: uuid.UUID | str) -> Timer:
        return _timer(self._call("GET", f"/timers/{timer_id}"))

    def cancel(self, timer_id: uuid.UUID | str) -> Timer:
        self._call("DELETE", f"/timers/{timer_id}")
        return self.get(timer_id)

    def reschedule(
        self,
        timer_id: uuid.UUID | str,
        *,
        eta: datetime | None = None,
        countdown: float | None = None,
    ) -> Timer:
        if eta is None and countdown is None:
            raise InvalidTimer("eta, countdown: give one of them")
        body = {"execute_at": _when(eta, countdown).isoformat()}
        return _timer(self._call("PUT", f"/timers/{timer_id}", json=body))

    def list(
        self,
        *,
        status: TimerStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
    ) -> list[Timer]:
        params: dict[str, Any] = {"limit": limit, "offset": offset, "sort": sort, "order": order}
        if status is not None:
            params["status"] = TimerStatus(status).value
        page = self._call("GET", "/timers", params=params)
        return [_timer(t) for t in page["timers"]]

    # -- recurring schedules: the /schedules routes, answers as the API gives them --------------

    def create_schedule(self, **body: Any) -> dict[str, Any]:
        """`POST /schedules` with this body (`cron` or `every`, `callback_config`, …)."""
        return dict(self._call("POST", "/schedules", json=body))

    def get_schedule(self, schedule_id: uuid.UUID | str) -> dict[str, Any]:
        return dict(self._call("GET", f"/schedules/{schedule_id}"))

    def list_schedules(self, **params: Any) -> dict[str, Any]:
        return dict(self._call("GET", "/schedules", params=params))

    def update_schedule(self, schedule_id: uuid.UUID | str, **changes: Any) -> dict[str, Any]:
        return dict(self._call("PUT", f"/schedules/{schedule_id}", json=changes))

    def delete_schedule(self, schedule_id: uuid.UUID | str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/schedules/{schedule_id}"))

    def schedule_action(self, schedule_id: uuid.UUID | str, action: str) -> dict[str, Any]:
        """`pause`, `resume` or `trigger` (one extra occurrence now)."""
        return dict(self._call("POST", f"/schedules/{schedule_id}/{action}"))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise TimersUnavailable(f"{method} {path}: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            raise TimersUnavailable(f"{method} {path}: HTTP {response.status_code}") from None
        code, message, data = answer.get("code"), answer.get("message", ""), answer.get("data")
        if code == 0:
            return data
        if code == 4:
            raise Unauthorized(message)
        if code == 3:
            raise TimerNotFound(uuid.UUID(path.split("/")[2]))
        if code == 2 and isinstance(data, dict) and "status" in data and "id" in data:
            raise TimerNotPending(uuid.UUID(data["id"]), TimerStatus(data["status"]))
        if code == 2:
            raise InvalidTimer(message)
        raise TimersUnavailable(f"{method} {path}: {message}")


def _when(eta: datetime | None, countdown: float | None) -> datetime:
    if eta is not None and countdown is not None:
        raise InvalidTimer("eta, countdown: give one of them, not both")
    if eta is not None:
        if eta.tzinfo is None:
            raise InvalidTimer("eta must be timezone-aware (include an offset such as UTC)")
        return eta
    return datetime.now(UTC) + timedelta(seconds=countdown or 0)


def _timer(data: Mapping[str, Any]) -> Timer:
    def at(name: str) -> datetime | None:
        value = data.get(name)
        return None if value is None else datetime.fromisoformat(value)

    return Timer(
        id=uuid.UUID(data["id"]),
        execute_at=datetime.fromisoformat(data["execute_at"]),
        callback_type=data["callback_type"],
        callback_config=data["callback_config"],
        status=TimerStatus(data["status"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        executed_at=at("executed_at"),
        last_error=data.get("last_error"),
        metadata=data.get("metadata"),
        attempts=data.get("attempts", 0),
    )
