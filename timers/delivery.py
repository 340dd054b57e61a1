"""HTTP delivery of one callback: POST the payload, classify the outcome in a short error string."""

from __future__ import annotations

import uuid

import requests

from timers import __version__
from timers.models import HttpCallback

USER_AGENT = f"timers/{__version__}"


def new_session() -> requests.Session:
    """A session for one worker process: keeps connections to receivers alive between callbacks."""
    session = requests.Session()
    session.headers.clear()
    return session


def deliver(
    session: requests.Session, timer_id: uuid.UUID, callback: HttpCallback, timeout: float
) -> str | None:
    """POST `callback.payload` as JSON to `callback.url`.

    Returns None on a 2xx answer, else a short reason: `HTTP 500`, `timeout after 30s`,
    `connection error: …`, `TLS error: …`. Redirects are not followed (a 3xx is a failure).
    """
    headers = {"User-Agent": USER_AGENT}
    headers.update(callback.headers)
    # The contract headers win over a timer's own headers of the same name.
    for name in list(headers):
        if name.lower() in ("content-type", "x-timer-id"):
            del headers[name]
    headers["Content-Type"] = "application/json"
    headers["X-Timer-Id"] = str(timer_id)
    try:
        response = session.post(
            callback.url,
            json=callback.payload,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.Timeout:
        return f"timeout after {timeout:g}s"
    except requests.exceptions.SSLError as exc:
        return f"TLS error: {_reason(exc)}"
    except requests.ConnectionError as exc:
        return f"connection error: {_reason(exc)}"
    except requests.RequestException as exc:
        return f"request error: {_reason(exc)}"
    with response:
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


def _reason(exc: Exception) -> str:
    """The innermost cause's message, which names the real problem (refused, DNS, certificate)."""
    inner: BaseException = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner) or type(inner).__name__
    return text[:200]
