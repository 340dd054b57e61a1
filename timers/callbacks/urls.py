"""What the `http` kind makes of a callback URL: whether it is one (`url_problem`), the receiver
it names for the per-destination cap (`destination`) and where its requests go (`Route`).

Each answer depends on the URL alone, and a worker delivers to the same few URLs over and over:
each is worked out once per process (for up to REMEMBERED URLs). Whether the outbound policy
allows a destination is the policy's to say (`timers.outbound`), at every delivery.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from yarl import URL

from timers.outbound import REMEMBERED, IPAddress, literal_address

MAX_URL_LENGTH = 2048


@functools.lru_cache(maxsize=REMEMBERED)
def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a callback URL, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if not url.isascii():
        return "must be ASCII (encode non-ASCII host names as IDNA)"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "must have a host"
    host = parts.hostname.rstrip(".")
    if not host.startswith("[") and ":" not in host:
        labels = host.split(".")
        if len(host) > 253 or any(not 0 < len(label) < 64 for label in labels):
            return f"host {parts.hostname!r} is not a valid name"
    return None


@functools.lru_cache(maxsize=REMEMBERED)
def destination(url: str) -> str:
    """The receiver's name for the per-destination cap: scheme, host and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class Route:
    """Where a URL's requests go: its host and port, the `Host` header, and the name for TLS
    (SNI and the certificate check; None for http and for an address)."""

    url: URL
    host: str
    port: int
    host_header: str
    tls_name: str | None

    @staticmethod
    @functools.lru_cache(maxsize=REMEMBERED)
    def of(url: str) -> Route:
        parsed = URL(url)
        host = parsed.raw_host or ""
        literal = literal_address(host.strip("[]")) is not None
        tls_name = host if parsed.scheme == "https" and not literal else None
        host_header = parsed.host_port_subcomponent or host
        return Route(parsed, host, parsed.port or 0, host_header, tls_name)

    @functools.lru_cache(maxsize=REMEMBERED)  # noqa: B019 - routes live as long as the process
    def at(self, address: IPAddress) -> URL:
        """The URL with its host replaced by `address` (where the connection goes)."""
        return self.url.with_host(str(address))
