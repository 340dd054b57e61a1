"""Where callbacks may go: public addresses only, unless the operator opens more.

A timer service makes requests on behalf of whoever holds an API key, so by default it refuses to
reach loopback, private (RFC 1918), link-local, unique-local, shared (CGNAT), multicast, unspecified
and every other non-public address, including IPv4-mapped, 6to4, NAT64 and Teredo forms of them.
`TIMERS_ALLOWED_NETWORKS` (CIDRs) opens what an operator wants, e.g. `127.0.0.0/8` for a local
receiver.

Checked twice:
- at the API, for hosts that are IP literals (in any spelling `inet_aton` accepts, such as
  `0x7f000001` or `2130706433`) or obviously local (`localhost`, `*.localhost`): a 400 naming the
  field;
- at delivery, after DNS resolution: `addresses` (by way of `GuardedResolver`) gives only the
  addresses it checked, and the delivery connects to one of those (no second lookup to rebind).
  A refusal says that a name resolves to a refused address, never which one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class Blocked(OSError):
    """A callback destination the outbound policy refuses; the message says why."""


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (`127.0.0.0/8, ::1/128`); raises ValueError naming the bad one."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, Teredo, compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d, the deprecated IPv4-compatible form
        return ipaddress.IPv4Address(int(ip))
    return None


def _kind(ip: IPAddress) -> str | None:
    """What makes an address non-public, or None for a public one."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"):
        return "a unique-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_reserved:
        return "not a public address"
    return None


# How many answers each policy remembers (per address, per URL): a worker delivers to the same
# few receivers over and over, and its answer for one never changes (DNS names are resolved and
# checked at each delivery all the same).
REMEMBERED = 4096


class OutboundPolicy:
    """The networks `allowed` beyond the public ones; fixed once made, so its answers are
    remembered."""

    def __init__(self, allowed: Iterable[Network | str] = ()) -> None:
        self.allowed = tuple(ipaddress.ip_network(str(n), strict=False) for n in allowed)
        self._refusals: dict[IPAddress, str | None] = {}
        self._url_refusals: dict[str, str | None] = {}

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a connection to `ip` is refused, or None if it may go ahead."""
        try:
            return self._refusals[ip]
        except KeyError:
            pass
        if len(self._refusals) >= REMEMBERED:
            self._refusals.clear()
        why = self._refusals[ip] = self._refusal(ip)
        return why

    def _refusal(self, ip: IPAddress) -> str | None:
        if any(ip in network for network in self.allowed if network.version == ip.version):
            return None
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = self.refusal(inner)
            return None if why is None else f"{ip} embeds {inner}: {why}"
        kind = _kind(ip)
        return None if kind is None else f"{ip} is {kind}"

    def check_host(self, host: str) -> None:
        """Refuse a URL host that is an IP literal or obviously local and not allowed; a DNS name
        is left to the delivery-time check. Raises Blocked."""
        name = host.strip("[]").rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            for loopback in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")):
                if self.refusal(loopback) is None:
                    return
            raise Blocked(f"{host} is a loopback name")
        ip = literal_address(name)
        if ip is not None:
            why = self.refusal(ip)
            if why is not None:
                raise Blocked(why if _is_standard(name) else f"{host} means {why}")

    def check_url(self, url: str) -> None:
        """`check_host` for a URL's host, and no credentials in it. Raises Blocked."""
        try:
            why = self._url_refusals[url]
        except KeyError:
            if len(self._url_refusals) >= REMEMBERED:
                self._url_refusals.clear()
            why = self._url_refusals[url] = self._url_refusal(url)
        if why is not None:
            raise Blocked(why)

    def _url_refusal(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return "credentials in the URL (user:password@) are not allowed"
        try:
            self.check_host(parts.hostname or "")
        except Blocked as exc:
            return str(exc)
        return None

    def resolver(self) -> GuardedResolver:
        return GuardedResolver(self)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Where a connection to `host` may go, in the order to try: the address a literal
        spells, or the addresses DNS gives for a name that this policy allows (IPv4 and IPv6).
        Raises Blocked when none is allowed, OSError when the lookup fails."""
        name = host.strip("[]")
        literal = literal_address(name)
        if literal is not None:
            why = self.refusal(literal)
            if why is not None:
                raise Blocked(why)
            return [literal]
        resolver = self.resolver()
        try:
            infos = await resolver.resolve(name, port, socket.AF_UNSPEC)
        finally:
            await resolver.close()
        return list(dict.fromkeys(ipaddress.ip_address(info["host"]) for info in infos))


def _is_standard(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=REMEMBERED)
def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling the C library accepts (`127.1`,
    `0x7f000001`, `2130706433`, `0177.0.0.1`), or None for a DNS name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy allows: the connection is made to
    an address that was checked, never to the result of a second lookup."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        infos = await self.inner.resolve(host, port, family)
        allowed, refusals = [], []
        for info in infos:
            why = self.policy.refusal(ipaddress.ip_address(info["host"]))
            if why is None:
                allowed.append(info)
            else:
                refusals.append(why)
        if not allowed:
            # Never which address: that would tell whoever made the timer which internal name
            # resolves where (the message ends up in the timer's `last_error`).
            raise Blocked(
                f"{host} resolves to a refused (non-public) address"
                if refusals
                else f"{host}: no address"
            )
        return allowed

    async def close(self) -> None:
        await self.inner.close()
