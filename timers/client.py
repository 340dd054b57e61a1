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
from datetime import datetime
from typing import Any

import requests

from timers.admission import requested_time
from timers.errors import (
    InvalidTimer,
    TimerNotFound,
    TimerNotPending,
    TimersUnavailable,
    Unauthorized,
)
from timers.library import celery_config
from timers.models import Timer, TimerStatus, utc_now


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
        body = schedule_body(
            target, eta, countdown, args, kwargs, queue, priority, headers, metadata
        )
        created = self._call("POST", "/timers", json=body)
        return self.get(created["id"])

    def get(self, timer_id: uuid.UUID | str) -> Timer:
        return timer_from(self._call("GET", f"/timers/{timer_id}"))

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
        body = reschedule_body(eta, countdown)
        return timer_from(self._call("PUT", f"/timers/{timer_id}", json=body))

    def list(
        self,
        *,
        status: TimerStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
    ) -> list[Timer]:
        page = self._call("GET", "/timers", params=list_params(status, limit, offset, sort, order))
        return [timer_from(t) for t in page["timers"]]

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
            answer = None
        return unwrap(method, path, response.status_code, answer)


# What both clients share: the request bodies they send and the meaning of the answers.


def schedule_body(
    target: Any,
    eta: datetime | None,
    countdown: float | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    priority: int | None,
    headers: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of `POST /timers` for a `celery` timer. Raises InvalidTimer."""
    body: dict[str, Any] = {
        "execute_at": _when(eta, countdown).isoformat(),
        "callback_type": "celery",
        "callback_config": celery_config(target, args, kwargs, queue, priority, headers),
    }
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def reschedule_body(eta: datetime | None, countdown: float | None) -> dict[str, Any]:
    """The body of `PUT /timers/{id}` that moves a timer. Raises InvalidTimer."""
    if eta is None and countdown is None:
        raise InvalidTimer("eta, countdown: give one of them")
    return {"execute_at": _when(eta, countdown).isoformat()}


def list_params(
    status: TimerStatus | str | None, limit: int, offset: int, sort: str, order: str
) -> dict[str, Any]:
    """The query of `GET /timers`."""
    params: dict[str, Any] = {"limit": limit, "offset": offset, "sort": sort, "order": order}
    if status is not None:
        params["status"] = TimerStatus(status).value
    return params


def unwrap(method: str, path: str, status_code: int, answer: Any) -> Any:
    """The `data` of an envelope answering `method path`, or its error raised as the exception of
    `timers.errors` it means (`answer` is the decoded JSON body, None when there was none)."""
    if not isinstance(answer, dict):
        raise TimersUnavailable(f"{method} {path}: HTTP {status_code}")
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
    # Checked against the clock by the server, whose clock it is.
    return requested_time(eta, countdown, utc_now())


def timer_from(data: Mapping[str, Any]) -> Timer:
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
        # `attempts` is the deprecated name of `claims` (servers before it answer only that).
        claims=data.get("claims", data.get("attempts", 0)),
    )
