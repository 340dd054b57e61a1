"""The outbound policy and the URL rules remember their answers: remembering must never change
one, whichever policy asks and however many URLs come by."""

from __future__ import annotations

import ipaddress

import pytest

from timers.callbacks.urls import Route, url_problem
from timers.outbound import REMEMBERED, Blocked, OutboundPolicy


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://0x7f000001/", "http://a:b@x.io/"]
)
def test_a_refused_url_is_refused_every_time(url: str) -> None:
    policy = OutboundPolicy()
    for _ in range(3):
        with pytest.raises(Blocked):
            policy.check_url(url)


def test_each_policy_answers_for_its_own_networks() -> None:
    strict, local = OutboundPolicy(), OutboundPolicy(["127.0.0.0/8"])
    url, address = "http://127.0.0.1:9/hook", ipaddress.ip_address("127.0.0.1")
    with pytest.raises(Blocked):
        strict.check_url(url)
    local.check_url(url)  # allowed there, asked after the strict policy refused it
    assert strict.refusal(address) is not None
    assert local.refusal(address) is None
    with pytest.raises(Blocked):
        strict.check_url(url)


def test_more_urls_than_it_remembers_still_get_their_answers() -> None:
    policy = OutboundPolicy()
    for n in range(REMEMBERED + 10):
        with pytest.raises(Blocked):
            policy.check_url(f"http://10.0.{n // 256 % 256}.{n % 256}:{n % 60000 + 1}/")
        policy.check_url(f"https://host{n}.example/")
    assert len(policy._url_refusals) <= REMEMBERED


def test_url_rules_and_routes() -> None:
    assert url_problem("http://example.com/hook") is None
    assert url_problem("ftp://example.com/") == "must be an absolute http:// or https:// URL"
    assert url_problem("http://exa mple.com/") == "must not contain whitespace"
    route = Route.of("https://[::1]:8443/x?y=1")
    assert (route.host, route.port, route.tls_name) == ("::1", 8443, None)
    named = Route.of("https://hooks.example:8443/x?y=1")
    assert (named.tls_name, named.host_header) == ("hooks.example", "hooks.example:8443")
    target = named.at(ipaddress.ip_address("203.0.113.9"))
    assert str(target) == "https://203.0.113.9:8443/x?y=1"
