"""One suite, two stores: PostgreSQL (`TimerStore`) and its in-memory twin (`InMemoryStore`) must
claim, release, start, renew, finish, recover, load and notify exactly alike, so that the
scheduler's decisions can be unit-tested on the twin.

Time: PostgreSQL compares against its own `now()` (another host's clock in production), so its
tests really wait; the twin's clock is moved by hand. The twin can't share a clock with other
hosts: a scheduler on the twin reads the same clock as its store, which is what PostgreSQL's
`now()` gives every host in production. A real database restart is staged in the fault suite.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from timers.errors import RedriveLimitReached
from timers.models import Claimed, DueTime, TimerStatus
from timers.storage import (
    HISTORY_LENGTH,
    LOST_CLAIM,
    LOST_DELIVERY,
    MAX_ERROR_LENGTH,
    Created,
    IdempotencyKey,
    IdempotencyKeyReused,
    NewTimer,
    Outcome,
    RecoveryRules,
    Store,
    TimerFilter,
    TimerNotFound,
    TimerNotPending,
)
from timers.store import TimerStore
from timers.testing import InMemoryStore, ManualClock


@dataclass
class World:
    store: Store
    now: Callable[[], datetime]
    advance: Callable[[float], None]
    kind: str

    def add(self, in_seconds: float = -1.0, **payload: object) -> uuid.UUID:
        at = self.now() + timedelta(seconds=in_seconds)
        config = {"type": "http", "url": "http://127.0.0.1:9/hook", "payload": payload}
        return self.store.create(NewTimer(at, "http", config)).id

    def status(self, timer_id: uuid.UUID) -> TimerStatus:
        return self.store.get(timer_id).status


@pytest.fixture(params=["postgres", "memory"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "postgres":
        store: TimerStore = request.getfixturevalue("store")
        yield World(store, lambda: datetime.now(UTC), time.sleep, "postgres")
    else:
        clock = ManualClock(datetime.now(UTC))
        yield World(InMemoryStore(clock), clock, clock.advance, "memory")


IDLE = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=True)
BUSY = RecoveryRules(enqueue_timeout=0.3, lease=0.3, queue_idle=False)


def recovered(world: World, rules: RecoveryRules = IDLE) -> set[uuid.UUID]:
    near = world.store.load_near_term(None, world.now() + timedelta(seconds=60), recovery=rules)
    ids = {r.id for r in near.recovered}
    assert ids <= {t.id for t in near.timers}, "recovered timers are loaded too"
    return ids


# -- API -------------------------------------------------------------------------------------


def test_created_timers_read_back_as_pending_with_fresh_ids(world: World) -> None:
    a = world.add(5, n=1)
    timer = world.store.get(a)
    assert timer.status is TimerStatus.PENDING and timer.attempts == 0
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


# -- claims ----------------------------------------------------------------------------------


def test_a_claim_takes_only_pending_timers_due_by_the_stores_clock(world: World) -> None:
    due, future, canceled = world.add(-1), world.add(30), world.add(-1)
    world.store.cancel(canceled)
    claimed = world.store.claim_due([due, future, canceled, uuid.uuid4()])
    timer = world.store.get(due)
    assert claimed == [Claimed(due, 1, timer.execute_at)]  # what the scheduler enqueues, no more
    assert timer.status is TimerStatus.EXECUTING and timer.attempts == 1
    assert timer.claimed_at is not None and timer.started_at is None
    assert world.store.claim_due([due]) == []  # a second claim never wins


def test_release_undoes_only_the_same_claim_that_no_worker_started(world: World) -> None:
    unsent, started, other = world.add(), world.add(), world.add()
    world.store.claim_due([unsent, started, other])
    world.store.begin_deliveries([(started, 1)], lease=60)
    assert world.store.release([(unsent, 1), (started, 1), (other, 0)]) == 1
    assert world.status(unsent) is TimerStatus.PENDING
    assert world.status(started) is TimerStatus.EXECUTING
    assert world.status(other) is TimerStatus.EXECUTING
    assert world.store.claim_due([unsent])[0].attempt == 2


def test_pending_by_ids_and_fail_missed(world: World) -> None:
    old, recent, done = world.add(-301), world.add(-200), world.add(-1)
    world.store.claim_due([done])
    pending = world.store.pending_by_ids([old, recent, done])
    assert sorted(pending) == sorted(
        DueTime(i, world.store.get(i).execute_at) for i in (old, recent)
    )
    assert world.store.fail_missed(300) == 1
    missed = world.store.get(old)
    assert missed.status is TimerStatus.FAILED
    due = missed.execute_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    assert missed.last_error == (
        f"missed: due at {due}Z, more than 300s before a scheduler could fire it"
    )


# -- deliveries ------------------------------------------------------------------------------


def test_a_claim_is_started_once_and_leased(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    [started] = world.store.begin_deliveries([(a, 1)], lease=10)
    assert started.started_at is not None and started.leased_until is not None
    assert started.leased_until - started.started_at == timedelta(seconds=10)
    assert world.store.begin_deliveries([(a, 1)], lease=10) == []  # a redelivered message
    assert world.store.begin_deliveries([(a, 2)], lease=10) == []  # a claim that never was


def test_renewing_extends_only_leases_still_under_claim(world: World) -> None:
    a, b = world.add(), world.add()
    world.store.claim_due([a, b])
    world.store.begin_deliveries([(a, 1), (b, 1)], lease=1)
    world.store.finish_many([Outcome(b, 1, None)])
    world.advance(0.2)
    assert world.store.renew_leases([(a, 1), (b, 1), (a, 7)], lease=5) == 1
    timer = world.store.get(a)
    assert timer.leased_until is not None and timer.started_at is not None
    assert timer.leased_until - timer.started_at >= timedelta(seconds=5.2)


def test_outcomes_are_recorded_only_under_their_claim(world: World) -> None:
    a, b, c = world.add(), world.add(), world.add()
    world.store.claim_due([a, b, c])
    world.store.begin_deliveries([(a, 1), (b, 1), (c, 1)], lease=60)
    long_error = "x" * (MAX_ERROR_LENGTH + 50)
    recorded = world.store.finish_many(
        [Outcome(a, 1, None), Outcome(b, 1, long_error), Outcome(c, 9, "HTTP 500")]
    )
    assert recorded == 2
    done, failed = world.store.get(a), world.store.get(b)
    assert done.status is TimerStatus.COMPLETED and done.last_error is None
    assert done.executed_at is not None and done.leased_until is None
    assert failed.status is TimerStatus.FAILED
    assert failed.last_error is not None and len(failed.last_error) == MAX_ERROR_LENGTH
    assert world.status(c) is TimerStatus.EXECUTING
    assert world.store.finish_many([Outcome(a, 1, "HTTP 500")]) == 0  # a late copy changes nothing
    assert world.store.get(a).status is TimerStatus.COMPLETED


def test_a_retry_goes_back_to_pending_at_its_time_and_the_history_stays_bounded(
    world: World,
) -> None:
    a = world.add()
    for n in range(1, HISTORY_LENGTH + 3):
        [claimed] = world.store.claim_due([a])
        world.store.begin_deliveries([(a, claimed.attempt)], lease=60)
        entry = {"attempt": n, "outcome": "retrying", "error": "HTTP 503", "status": 503}
        before = world.now()
        assert world.store.finish_many([Outcome(a, claimed.attempt, "HTTP 503", 0.0, entry)]) == 1
        timer = world.store.get(a)
        assert timer.status is TimerStatus.PENDING and timer.last_error == "HTTP 503"
        assert timer.started_at is None and timer.claimed_at is None
        assert timer.execute_at >= before - timedelta(seconds=1)
    assert timer.delivery_attempts == HISTORY_LENGTH + 2
    assert [e["attempt"] for e in timer.history] == list(range(3, HISTORY_LENGTH + 3))
    [claimed] = world.store.claim_due([a])
    world.store.begin_deliveries([(a, claimed.attempt)], lease=60)
    later = Outcome(a, claimed.attempt, "HTTP 503", 3600.0, {"attempt": 99})
    world.store.finish_many([later])
    waiting = world.store.get(a)
    assert waiting.execute_at >= world.now() + timedelta(seconds=3590)
    assert world.store.claim_due([a]) == []  # not due before its time
    world.store.cancel(a)  # a retry that waits can be canceled
    assert world.status(a) is TimerStatus.CANCELED


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
        world.store.begin_deliveries([(a, claimed.attempt)], lease=60)
        world.store.finish_many([Outcome(a, claimed.attempt, "HTTP 500", None, {})])
        if redrive == 10:
            break
        assert world.store.redrive(a).status is TimerStatus.PENDING
    with pytest.raises(RedriveLimitReached, match="redriven 10 times"):
        world.store.redrive(a)
    assert world.status(a) is TimerStatus.FAILED
    with pytest.raises(TimerNotFound):
        world.store.redrive(uuid.uuid4())


# -- loading and recovery --------------------------------------------------------------------


def test_the_near_term_load_is_the_window_earliest_first(world: World) -> None:
    now = world.now()
    inside = [world.add(s) for s in (50, -100, 10)]
    outside = [world.add(s) for s in (61, -301)]
    near = world.store.load_near_term(now - timedelta(seconds=300), now + timedelta(seconds=60))
    assert [t.id for t in near.timers] == [inside[1], inside[2], inside[0]]
    assert near.recovered == []
    unbounded = world.store.load_near_term(None, now + timedelta(seconds=60), limit=2)
    assert [t.id for t in unbounded.timers] == [outside[1], inside[1]]


def test_a_claim_never_started_is_recovered_after_the_enqueue_timeout_when_the_queue_is_idle(
    world: World,
) -> None:
    a = world.add()
    world.store.claim_due([a])
    assert recovered(world) == set()
    world.advance(0.4)
    assert recovered(world, BUSY) == set()  # its message may be waiting in a long queue
    assert recovered(world) == {a}
    timer = world.store.get(a)
    assert timer.status is TimerStatus.PENDING and timer.last_error == LOST_CLAIM
    assert world.store.claim_due([a])[0].attempt == 2


def test_a_delivery_is_recovered_only_once_its_lease_lapsed(world: World) -> None:
    renewed, lapsed = world.add(), world.add()
    world.store.claim_due([renewed, lapsed])
    world.store.begin_deliveries([(renewed, 1), (lapsed, 1)], lease=0.5)
    for _ in range(3):
        world.advance(0.25)
        world.store.renew_leases([(renewed, 1)], lease=0.5)
    assert recovered(world) == {lapsed}
    timer = world.store.get(lapsed)
    assert timer.last_error == LOST_DELIVERY
    assert timer.started_at is None and timer.leased_until is None
    assert world.status(renewed) is TimerStatus.EXECUTING


def test_a_late_copy_of_an_old_claims_message_is_ignored(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    world.advance(0.4)
    assert recovered(world) == {a}
    world.store.claim_due([a])
    assert world.store.begin_deliveries([(a, 1)], lease=60) == []
    assert world.store.finish_many([Outcome(a, 1, None)]) == 0
    assert len(world.store.begin_deliveries([(a, 2)], lease=60)) == 1
    assert world.store.finish_many([Outcome(a, 2, None)]) == 1


def test_no_lease_is_taken_over_until_the_database_has_been_up_for_a_lease(world: World) -> None:
    a = world.add()
    world.store.claim_due([a])
    world.store.begin_deliveries([(a, 1)], lease=0.1)
    world.advance(0.2)
    # Recovery with a lease longer than the database's uptime: as if it had just restarted,
    # the workers get a whole lease to renew or record before anything is taken over.
    just_restarted = RecoveryRules(enqueue_timeout=0.3, lease=uptime(world) + 60, queue_idle=True)
    assert recovered(world, just_restarted) == set()
    assert recovered(world) == {a}


def uptime(world: World) -> float:
    if isinstance(world.store, InMemoryStore):
        return (world.now() - world.store.started_at).total_seconds()
    assert isinstance(world.store, TimerStore)
    with world.store.engine.connect() as conn:
        query = text("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
        return float(conn.execute(query).scalar_one())


# -- change notifications --------------------------------------------------------------------


def test_the_feed_names_timers_that_became_pending_changed_or_were_canceled(world: World) -> None:
    feed = world.store.changes()
    feed.open()
    try:
        a, b = world.add(5), world.add(-1)
        world.store.cancel(a)
        world.store.claim_due([b])  # claims are not notified
        world.store.release([(b, 1)])
        seen: list[uuid.UUID] = []
        deadline = time.monotonic() + 5
        while len(seen) < 4 and time.monotonic() < deadline:
            seen += [c.timer_id for c in feed.wait(0.2)]
        assert seen == [a, b, a, b]
    finally:
        feed.close()


# -- listing, bulk cancel, stats, retention ---------------------------------------------------


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


def test_counts_and_the_due_backlog(world: World) -> None:
    due = [world.add(-1) for _ in range(3)]
    world.add(3600)
    world.store.claim_due(due[:1])
    world.store.cancel(due[2])
    counts, estimated = world.store.counts()
    assert not estimated
    assert counts == {"pending": 2, "executing": 1, "completed": 0, "failed": 0, "canceled": 1}
    assert world.store.due_backlog() == 1
    stats = world.store.stats()
    assert (stats.counts, stats.due_backlog) == (counts, 1)


def finish(world: World, timer_id: uuid.UUID, error: str | None = None) -> None:
    [claimed] = world.store.claim_due([timer_id])
    world.store.begin_deliveries([(timer_id, claimed.attempt)], lease=60)
    assert world.store.finish_many([Outcome(timer_id, claimed.attempt, error)]) == 1


def test_recent_lateness_by_minute(world: World) -> None:
    assert world.store.lateness() == []
    for _ in range(3):
        finish(world, world.add(-2))
    finish(world, world.add(-4), "HTTP 500")
    minutes = world.store.lateness()
    assert sum(m.count for m in minutes) == 4
    for m in minutes:
        assert 1900 <= m.p50_ms <= m.p99_ms <= m.max_ms < 60_000
    assert max(m.max_ms for m in minutes) >= 3900


def test_purge_deletes_only_old_finished_timers_a_batch_at_a_time(world: World) -> None:
    old = [world.add() for _ in range(5)]
    for timer_id in old[:3]:
        finish(world, timer_id)
    finish(world, old[3], "HTTP 500")
    world.store.cancel(world.add(60))
    waiting = world.add(3600)
    running = world.add()
    world.store.claim_due([running])
    world.advance(1.5)
    fresh = world.add()
    finish(world, fresh)
    first = world.store.purge_finished(1.0, limit=3)
    assert first is not None and first.deleted == 3 and first.next is not None
    # The next batch goes on after the last row the first one looked at; finding fewer rows
    # than its limit, it ends the pass.
    assert world.store.purge_finished(1.0, limit=3, at=first.next) == (2, None)
    assert world.store.purge_finished(1.0, limit=3) == (0, None)
    left = {t.id: t.status for t in world.store.page(limit=50).timers}
    assert left == {
        old[4]: TimerStatus.PENDING,
        waiting: TimerStatus.PENDING,
        running: TimerStatus.EXECUTING,
        fresh: TimerStatus.COMPLETED,
    }
    world.advance(0.01)
    assert world.store.purge_finished(0.0, limit=10) == (1, None)  # 0: every finished timer
