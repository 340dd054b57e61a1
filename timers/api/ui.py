"""The timers page at `/ui`: a read-only page over the JSON API.

The files served here hold no data, so they need no key; the page's script asks the user for the
API key and sends it as `X-API-Key` on every call to the API, which checks it as for any client.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter()

# Only the page's own files: no inline script or style, no other origin, no framing, and a form
# can't send the key anywhere (the key form is handled by the script alone).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def _asset(name: str) -> bytes:
    """A file of `timers/static`, read once (it ships with the package)."""
    return resources.files("timers").joinpath("static", name).read_bytes()


def _serve(name: str, media_type: str) -> Response:
    return Response(_asset(name), media_type=media_type, headers=HEADERS)


@router.get("/ui")
def page() -> Response:
    return _serve("index.html", "text/html; charset=utf-8")


@router.get("/ui/app.js")
def script() -> Response:
    return _serve("app.js", "text/javascript; charset=utf-8")


@router.get("/ui/app.css")
def stylesheet() -> Response:
    return _serve("app.css", "text/css; charset=utf-8")
