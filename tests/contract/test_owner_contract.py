"""Owners, on both stores: a timer belongs to the principal that made it; given an owner, every
read and change sees that owner's timers alone (another's is "not found"), and without one (an
admin) every owner's. The same `world` fixture as the store contract suite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.contract import test_store_contract as suite
from tests.contract.test_store_contract import World
from timers.models import DEFAULT_OWNER, TimerStatus
from timers.storage import NewTimer, TimerFilter, TimerNotFound

world = suite.world  # the same fixture: each test runs on both stores


def make(world: World, owner: str, in_seconds: float = 60, **metadata: object) -> uuid.UUID:
    at = world.now() + timedelta(seconds=in_seconds)
    config = {"type": "http", "url": "http://127.0.0.1:9/hook"}
    new = NewTimer(at, "http", config, metadata=metadata or None, owner=owner)
    return world.store.create(new).id


def test_a_timer_belongs_to_its_maker_and_to_default_without_one(world: World) -> None:
    mine = make(world, "shop")
    assert world.store.get(mine).owner == "shop"
    plain = world.add(60)
    assert world.store.get(plain).owner == DEFAULT_OWNER
    [batch] = world.store.create_many([NewTimer(world.now(), "http", {"url": "x"}, owner="b")])
    assert batch.owner == "b"


def test_another_owners_timer_is_not_found_for_every_operation(world: World) -> None:
    theirs = make(world, "billing")
    with pytest.raises(TimerNotFound):
        world.store.get(theirs, "shop")
    with pytest.raises(TimerNotFound):
        world.store.update_pending(theirs, {"metadata": {"x": 1}}, "shop")
    with pytest.raises(TimerNotFound):
        world.store.cancel(theirs, "shop")
    with pytest.raises(TimerNotFound):
        world.store.redrive(theirs, "shop")
    # Untouched, and its owner (or an admin, owner None) still reaches it.
    assert world.store.get(theirs, "billing").status is TimerStatus.PENDING
    assert world.store.get(theirs).metadata is None
    assert world.store.cancel(theirs, "billing").status is TimerStatus.CANCELED


def test_pages_and_bulk_cancels_keep_to_their_owner(world: World) -> None:
    shop = [make(world, "shop", tenant="t1") for _ in range(3)]
    billing = [make(world, "billing", tenant="t1") for _ in range(2)]
    for where in (TimerFilter(owner="shop"), TimerFilter(owner="shop", metadata={"tenant": "t1"})):
        page = world.store.page(where=where)
        assert {t.id for t in page.timers} == set(shop) and page.total == 3
    assert world.store.page(where=TimerFilter()).total == 5
    assert TimerFilter(owner="shop").is_empty  # the owner is no condition a caller chose
    assert world.store.cancel_matching(TimerFilter(owner="billing")) == 2
    assert {world.store.get(i).status for i in shop} == {TimerStatus.PENDING}
    assert {world.store.get(i).status for i in billing} == {TimerStatus.CANCELED}


def test_pending_timers_are_counted_per_owner_up_to_a_bound(world: World) -> None:
    for _ in range(4):
        make(world, "shop")
    make(world, "billing")
    world.store.cancel(make(world, "shop"), "shop")
    assert world.store.count_pending("shop", 100) == 4
    assert world.store.count_pending("shop", 2) == 2
    assert world.store.count_pending("billing", 100) == 1
    assert world.store.count_pending("nobody", 100) == 0
