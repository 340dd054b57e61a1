"""The response envelope `{"code", "message", "data"}` and the handlers that put every error in it."""

from __future__ import annotations

import enum
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from timers.callbacks import CALLBACK_TYPES
from timers.errors import InvalidTimer
from timers.storage import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class Code(enum.IntEnum):
    OK = 0
    INTERNAL = 1
    VALIDATION = 2
    NOT_FOUND = 3
    UNAUTHORIZED = 4


_HTTP_STATUS = {
    Code.OK: 200,
    Code.INTERNAL: 500,
    Code.VALIDATION: 400,
    Code.NOT_FOUND: 404,
    Code.UNAUTHORIZED: 401,
}


class ApiError(Exception):
    """An error answered in the envelope; `status` overrides the HTTP status of its code (429
    for a quota)."""

    def __init__(
        self, code: Code, message: str, data: Any = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status


def envelope(
    data: Any = None, *, code: Code = Code.OK, message: str = "ok", status: int | None = None
) -> JSONResponse:
    status = status or _HTTP_STATUS[code]
    if isinstance(data, BaseModel):
        # A model writes its own JSON: a third of the time of dumping it to Python objects and
        # those to JSON (FastAPI's generic encoder takes ~20x longer: 11 ms for a page of 50).
        head = json.dumps(
            {"code": int(code), "message": message}, ensure_ascii=False, separators=(",", ":")
        )
        written = f'{head[:-1]},"data":{data.model_dump_json(by_alias=True)}}}'
        return _Written(written.encode(), status_code=status)
    body = {"code": int(code), "message": message, "data": jsonable_encoder(data)}
    return JSONResponse(body, status_code=status)


class _Written(JSONResponse):
    """A JSON response whose body is written already."""

    def render(self, content: Any) -> bytes:
        return bytes(content)


def describe_validation_error(errors: Any) -> str:
    """One line naming each bad field: `execute_at: Input should have timezone info`."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append(
                f"body: malformed JSON ({error.get('ctx', {}).get('error', 'parse error')})"
            )
            continue
        loc = [p for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
        # A callback kind's tag (`callback_config.http.url`) is not part of the field's name.
        loc = [
            p
            for i, p in enumerate(loc)
            if not (i and loc[i - 1] in ("callback_config", "callback") and p in CALLBACK_TYPES)
        ]
        bad_key = loc[-1] == "[key]" if loc else False
        if bad_key:
            key, loc = loc[-2], loc[:-2]
        field = ""
        for part in loc:
            field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
        msg = str(error.get("msg", "invalid"))
        if bad_key:
            msg = f"invalid {'header name' if 'headers' in loc else 'key'} {key!r}"
        elif error.get("type") == "union_tag_invalid":
            ctx = error.get("ctx", {})
            field = f"{field}.type" if field else "type"
            msg = f"must be one of {ctx.get('expected_tags', '')}, got {ctx.get('tag')!r}"
        elif error.get("type") == "union_tag_not_found":  # mca-timer's `callback` without one
            field = f"{field}.type" if field else "type"
            msg = f"is required: one of {', '.join(map(repr, CALLBACK_TYPES))}"
        elif error.get("type") == "string_pattern_mismatch":
            msg = _PATTERN_MEANING.get(str(loc[-1]) if loc else "", msg)
            if "headers" in loc[:-1]:
                msg = "header names must be tokens and values visible ASCII, spaces and tabs"
        parts.append(f"{field or 'body'}: {msg}")
    return "; ".join(parts) or "invalid request"


# What a broken pattern means, for the fields that have one.
_KEY_MEANING = "must be 1 to 255 visible ASCII characters (no spaces)"
_PATTERN_MEANING = {
    "url": "must be an absolute http:// or https:// URL, with no spaces",
    "Idempotency-Key": _KEY_MEANING,
    "key": _KEY_MEANING,
    "subject": "must be dot-separated tokens of visible ASCII characters, none empty, without "
    "wildcards (* or >)",
}


# SQLSTATE 57014, query_canceled: what PostgreSQL answers when the API's statement timeout (see
# `timers.api.STATEMENT_TIMEOUT`) cuts a statement off.
QUERY_CANCELED = "57014"


def cut_off(exc: StoreError) -> bool:
    """Whether the database canceled the statement behind this error."""
    driver_error = getattr(exc.__cause__, "orig", exc.__cause__)
    return getattr(driver_error, "pgcode", None) == QUERY_CANCELED


def statement_timeout(request: Request, exc: StoreError) -> JSONResponse:
    log.warning("statement timeout on %s %s: %s", request.method, request.url.path, exc)
    return envelope(
        None,
        code=Code.INTERNAL,
        message="the request took too long in the database and was cut off (statement timeout); "
        "narrow it (a filter, a cursor instead of a deep offset, no total) or try again later",
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.data, code=exc.code, message=exc.message, status=exc.status)

    @app.exception_handler(InvalidTimer)
    async def invalid_timer(_: Request, exc: InvalidTimer) -> JSONResponse:
        # Refused at admission (`timers.admission`): the message names the field.
        return envelope(None, code=Code.VALIDATION, message=str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(None, code=Code.VALIDATION, message=describe_validation_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {
            401: Code.UNAUTHORIZED,
            403: Code.UNAUTHORIZED,
            404: Code.NOT_FOUND,
        }.get(exc.status_code, Code.VALIDATION if exc.status_code < 500 else Code.INTERNAL)
        return envelope(None, code=code, message=str(exc.detail), status=exc.status_code)

    @app.exception_handler(StoreUnavailable)
    async def database_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        if cut_off(exc):
            return statement_timeout(request, exc)
        log.error("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        return envelope(None, code=Code.INTERNAL, message="database unavailable, try again later")

    @app.exception_handler(StoreError)
    async def database_error(request: Request, exc: StoreError) -> JSONResponse:
        if cut_off(exc):
            return statement_timeout(request, exc)
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return envelope(None, code=Code.INTERNAL, message="internal error")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope(None, code=Code.INTERNAL, message="internal error")
