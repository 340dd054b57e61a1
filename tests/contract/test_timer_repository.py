"""`TimerRepository` on both stores: timers made (once per idempotency key), read, listed,
changed, canceled (one or by filter) and redriven; and owners: a timer belongs to the principal
that made it; given an owner, every read and change sees that owner's timers alone (another's is
"not found"), and without one (an admin) every owner's."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from tests.contract.world import World
from timers.errors import RedriveLimitReached
from timers.models import DEFAULT_OWNER, TimerStatus
from timers.storage import (
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    NewTimer,
    Outcome,
    TimerFilter,
    TimerNotFound,
    TimerNotPending,
)

# -- API ------------------------------------------------------------------------------------------


def test_created_timers_read_back_as_pending_with_fresh_ids(world: World) -> None:
    a = world.add(5, n=1)
    timer = world.store.get(a)
    assert timer.status is TimerStatus.PENDING and timer.claims == 0
    assert timer.callback_config["payload"] == {"n": 1}
    batch = world.store.create_many([NewTimer(world.now(), "http", {"url": "x"})] * 3)
    assert len({t.id for t in batch}) == 3
    assert world.store.find(uuid.uuid4()) is None
    with pytest.raises(TimerNotFound):
        world.store.get(uuid.uuid4())


def test_pages_filter_sort_and_count(world: World) -> None:
    ids = [world.add(i) for i in (3, 1, 2)]
    world.store.cancel(ids[0])
    page = world.store.page(
        where=TimerFilter(status=TimerStatus.PENDING), sort="execute_at", order="asc"
    )
    assert [t.id for t in page.timers] == [ids[1], ids[2]] and page.total == 2
    newest_first = world.store.page(limit=2, offset=0)
    assert [t.id for t in newest_first.timers] == [ids[2], ids[1]] and newest_first.total == 3


def test_only_pending_timers_change_or_cancel(world: World) -> None:
    a = world.add(5)
    later = world.now() + timedelta(seconds=30)
    assert world.store.update_pending(a, {"execute_at": later}).execute_at == later
    assert world.store.cancel(a).status is TimerStatus.CANCELED
    with pytest.raises(TimerNotPending):
        world.store.cancel(a)
    with pytest.raises(TimerNotFound):
        world.store.update_pending(uuid.uuid4(), {"execute_at": later})
    with pytest.raises(ValueError, match="cannot change"):
        world.store.update_pending(a, {"status": "pending"})


def keyed(world: World, key: str, owner: str = "owner-a", request: str = "r1") -> NewTimer:
    at = world.now() + timedelta(seconds=60)
    config = {"type": "http", "url": "http://127.0.0.1:9/hook", "payload": {"key": key}}
    return NewTimer(at, "http", config, idempotency=IdempotencyKey(key, owner, request))


def test_a_key_makes_one_timer_per_owner_and_request(world: World) -> None:
    [first] = world.store.create_once([keyed(world, "k")])
    assert first.created and first.timer.status is TimerStatus.PENDING
    [again] = world.store.create_once([keyed(world, "k")])
    assert (again.timer.id, again.created) == (first.timer.id, False)
    [other_owner] = world.store.create_once([keyed(world, "k", owner="owner-b")])
    assert other_owner.created and other_owner.timer.id != first.timer.id
    with pytest.raises(IdempotencyKeyReused) as reused:
        world.store.create_once([keyed(world, "k", request="r2")])
    assert (reused.value.key, reused.value.timer_id, reused.value.index) == ("k", first.timer.id, 0)
    assert world.store.find_by_key(IdempotencyKey("k", "owner-a", "r1")) == first.timer
    assert world.store.find_by_key(IdempotencyKey("k", "owner-c", "r1")) is None
    with pytest.raises(IdempotencyKeyReused):
        world.store.find_by_key(IdempotencyKey("k", "owner-a", "r2"))
    assert world.store.page().total == 2


def test_racing_creates_with_one_key_make_one_timer(world: World) -> None:
    start = threading.Barrier(20)
    answers: list[Created] = []

    def create() -> None:
        start.wait()
        answers.extend(world.store.create_once([keyed(world, "race")]))

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(a.created for a in answers) == [False] * 19 + [True]
    assert len({a.timer.id for a in answers}) == 1
    assert world.store.page().total == 1


def test_a_batch_with_keys_is_all_or_none_in_its_order(world: World) -> None:
    [old] = world.store.create_once([keyed(world, "old")])
    plain = NewTimer(world.now(), "http", {"url": "x"})
    answers = world.store.create_once(
        [keyed(world, "b"), plain, keyed(world, "old"), keyed(world, "a"), keyed(world, "b")]
    )
    assert [a.created for a in answers] == [True, True, False, True, False]
    assert answers[2].timer.id == old.timer.id
    assert answers[4].timer.id == answers[0].timer.id  # a key twice: its first use's timer
    assert world.store.get(answers[3].timer.id).callback_config["payload"] == {"key": "a"}
    assert world.store.page().total == 4
    with pytest.raises(IdempotencyKeyReused) as reused:
        world.store.create_once(
            [keyed(world, "c"), plain, keyed(world, "d"), keyed(world, "d", request="r2")]
        )
    assert reused.value.index == 3
    with pytest.raises(IdempotencyKeyReused):
        world.store.create_once([keyed(world, "e"), keyed(world, "old", request="r2")])
    assert world.store.page().total == 4  # nothing of a refused batch was made
    assert world.store.find_by_key(IdempotencyKey("c", "owner-a", "r1")) is None
    assert world.store.create_once([]) == []


# -- redrives -------------------------------------------------------------------------------------


def test_only_a_failed_timer_is_redriven_with_a_fresh_budget(world: World) -> None:
    a, b = world.add(), world.add(3600)
    [claimed] = world.store.claim_due([a])
    world.store.begin_deliveries([(a, 1)], lease=60)
    world.store.finish_many([Outcome(a, 1, "HTTP 500", None, {"attempt": 1})])
    redriven = world.store.redrive(a)
    assert redriven.status is TimerStatus.PENDING and redriven.delivery_attempts == 0
    assert redriven.execute_at <= world.now() + timedelta(seconds=1)
    assert len(redriven.history) == 1
    with pytest.raises(TimerNotPending):
        world.store.redrive(b)
    with pytest.raises(TimerNotFound):
        world.store.redrive(uuid.uuid4())


def test_a_timer_is_redriven_at_most_ten_times(world: World) -> None:
    a = world.add()
    for redrive in range(11):
        [claimed] = world.store.claim_due([a])
        world.store.begin_deliveries([(a, claimed.claim)], lease=60)
        world.store.finish_many([Outcome(a, claimed.claim, "HTTP 500", None, {})])
        if redrive == 10:
            break
        assert world.store.redrive(a).status is TimerStatus.PENDING
    with pytest.raises(RedriveLimitReached, match="redriven 10 times"):
        world.store.redrive(a)
    assert world.status(a) is TimerStatus.FAILED
    with pytest.raises(TimerNotFound):
        world.store.redrive(uuid.uuid4())


# -- listing and bulk cancel ----------------------------------------------------------------------


def tagged(world: World, in_seconds: float, kind: str = "http", **metadata: object) -> uuid.UUID:
    at = world.now() + timedelta(seconds=in_seconds)
    config = {"type": kind, "url": "http://127.0.0.1:9/hook"}
    return world.store.create(NewTimer(at, kind, config, metadata=metadata or None)).id


def ids_of(world: World, where: TimerFilter, **kwargs: object) -> list[uuid.UUID]:
    return [t.id for t in world.store.page(where=where, limit=200, **kwargs).timers]  # type: ignore[arg-type]


def test_filters_by_metadata_containment_kind_and_time(world: World) -> None:
    acme = tagged(world, 10, tenant="acme", tags=["a", "b"], plan={"tier": "gold", "seats": 5})
    acme_nats = tagged(world, 20, "nats", tenant="acme")
    other = tagged(world, 30, tenant="other", flag=True)
    bare = tagged(world, 40)
    everyone = set(ids_of(world, TimerFilter()))
    assert everyone == {acme, acme_nats, other, bare}
    assert set(ids_of(world, TimerFilter(metadata={"tenant": "acme"}))) == {acme, acme_nats}
    assert ids_of(world, TimerFilter(metadata={"plan": {"tier": "gold"}})) == [acme]
    assert ids_of(world, TimerFilter(metadata={"tags": ["b"]})) == [acme]
    assert ids_of(world, TimerFilter(metadata={"tags": ["c"]})) == []
    assert ids_of(world, TimerFilter(metadata={"flag": True})) == [other]
    assert ids_of(world, TimerFilter(metadata={"flag": 1})) == []  # JSON true is not 1
    assert set(ids_of(world, TimerFilter(metadata={}))) == {acme, acme_nats, other}  # has metadata
    assert ids_of(world, TimerFilter(callback_type="nats")) == [acme_nats]
    window = TimerFilter(
        execute_after=world.store.get(acme_nats).execute_at,
        execute_before=world.store.get(bare).execute_at,
    )
    assert ids_of(world, window, sort="execute_at", order="asc") == [acme_nats, other]
    both = TimerFilter(metadata={"tenant": "acme"}, callback_type="http")
    assert ids_of(world, both) == [acme]
    world.store.cancel(acme)
    assert ids_of(world, TimerFilter(status=TimerStatus.CANCELED, metadata={"tenant": "acme"})) == [
        acme
    ]


@pytest.mark.parametrize("sort", ["created_at", "execute_at"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_keyset_pages_cover_every_timer_once_in_order(world: World, sort: str, order: str) -> None:
    made = [tagged(world, (i * 7) % 11, n=i) for i in range(23)]
    seen: list[uuid.UUID] = []
    after = None
    pages = 0
    while True:
        page = world.store.page(limit=5, sort=sort, order=order, after=after, with_total=False)
        assert page.total is None
        seen += [t.id for t in page.timers]
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert pages == 5 and len(seen) == len(set(seen)) == 23 and set(seen) == set(made)
    keys = [(getattr(world.store.get(i), sort), i) for i in seen]
    assert keys == sorted(keys, reverse=order == "desc")
    whole = world.store.page(limit=23, sort=sort, order=order)
    assert whole.next is None and whole.total == 23


def test_bulk_cancel_touches_only_matching_pending_timers(world: World) -> None:
    pending = [tagged(world, 60, tenant="acme") for _ in range(3)]
    claimed = tagged(world, -1, tenant="acme")
    world.store.claim_due([claimed])
    elsewhere = tagged(world, 60, tenant="other")
    assert world.store.cancel_matching(TimerFilter(metadata={"tenant": "acme"})) == 3
    assert {world.status(i) for i in pending} == {TimerStatus.CANCELED}
    assert world.status(claimed) is TimerStatus.EXECUTING
    assert world.status(elsewhere) is TimerStatus.PENDING
    assert world.store.cancel_matching(TimerFilter(metadata={"tenant": "acme"})) == 0
    assert world.store.cancel_matching(TimerFilter(status=TimerStatus.EXECUTING)) == 0


# -- owners ---------------------------------------------------------------------------------------


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
        # Not the last page: the total is counted (by the label's index for a label filter).
        assert world.store.page(where=where, limit=1).total == 3
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
