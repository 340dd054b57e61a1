"""Lists of timers on the PostgreSQL store: filters, pages (offset or keyset) with their totals
(`totals`), and the bulk cancel of what a filter matches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB

from timers.models import Timer, TimerStatus
from timers.schema import timer_labels, timers
from timers.storage import PagePosition, TimerFilter, TimerPage, check_sort
from timers.store.connection import Connected, owned_by
from timers.store.sql import queries
from timers.store.totals import count as count_total

LABEL_LENGTH = 200  # the longest key, and string value, that `timers_labels_of` makes a label
LABEL_INTEGER = 10**15  # integers below this in size are labels

SNAPSHOT = queries["snapshot"]


def matching(where: TimerFilter) -> list[Any]:
    """The WHERE conditions of a filter, each served by migration 0008's indexes (the callback
    kind, one of three, filters the rows of whichever index scan the rest picks)."""
    conditions: list[Any] = []
    if where.status is not None:
        conditions.append(timers.c.status == where.status.value)
    if where.callback_type is not None:
        conditions.append(timers.c.callback_type == where.callback_type)
    if where.metadata is not None:
        conditions.append(timers.c.metadata.contains(dict(where.metadata)))
    if where.execute_after is not None:
        conditions.append(timers.c.execute_at >= where.execute_after)
    if where.execute_before is not None:
        conditions.append(timers.c.execute_at < where.execute_before)
    if where.schedule_id is not None:
        conditions.append(timers.c.schedule_id == where.schedule_id)
    return conditions + owned_by(where.owner)


def label_of(where: TimerFilter) -> tuple[str, Any] | None:
    """The label a page walks for this filter (migration 0009): only for a filter of exactly one
    metadata pair and nothing else, whose pair `timers_labels_of` makes a label (the same rule,
    lengths counted in UTF-8 bytes, never more than PostgreSQL's characters); else None. With
    more conditions, walking one label could read every timer that carries it to find a few that
    match the rest: those filters take the GIN index and sort what it finds."""
    if where.metadata is None or len(where.metadata) != 1:
        return None
    if not replace(where, metadata=None).is_empty:
        return None
    ((key, value),) = where.metadata.items()
    if len(key.encode()) > LABEL_LENGTH:
        return None
    if (
        isinstance(value, bool)
        or (isinstance(value, str) and len(value.encode()) <= LABEL_LENGTH)
        or (isinstance(value, int) and abs(value) < LABEL_INTEGER)
    ):
        return key, value
    return None


def cancel_matching_statement(where: TimerFilter) -> Any:
    """The UPDATE that cancels the `pending` timers matching `where`."""
    return (
        timers.update()
        .where(timers.c.status == TimerStatus.PENDING.value, *matching(where))
        .values(status=TimerStatus.CANCELED.value)
    )


def page_statement(
    where: TimerFilter,
    sort: str,
    order: str,
    after: PagePosition | None,
    limit: int,
    offset: int,
) -> tuple[Any, tuple[Any, list[Any]]]:
    """A page's query (one row more than `limit`, to tell whether another page follows), and
    what its total counts: the source and conditions of `totals.count` (see `page`)."""
    column, row_id = timers.c[sort], timers.c.id
    descending = order == "desc"
    label = label_of(where) if sort == "created_at" else None
    source: Any = timers
    if label is None:
        conditions = matching(where)
        counted = (source, conditions)
    else:  # in creation order from the label's index, timers by id (0009)
        name, value = label  # the whole filter
        source = timer_labels.join(timers, timers.c.id == timer_labels.c.timer_id)
        column, row_id = timer_labels.c.created_at, timer_labels.c.timer_id
        conditions = [
            timer_labels.c.key == name,
            timer_labels.c.value == bindparam("label_value", value, type_=JSONB),
            # checked on each timer the labels lead to. The function, not the operator `@>`:
            # the GIN index (and its sort of every match) stays out of the planner's choice,
            # and the planner guesses a third of the rows pass, not a thousandth (which made
            # it start a parallel worker, 30 ms, to find "the one row" among 10,000 labels)
            func.jsonb_contains(
                timers.c.metadata, bindparam("metadata", {name: value}, type_=JSONB)
            ),
            *owned_by(where.owner),
        ]
        # The label's entries are its timers; a principal's share is counted on the join.
        counted = (timer_labels, conditions[:2]) if where.owner is None else (source, conditions)
    query = select(timers).select_from(source).where(*conditions)
    if after is not None:
        key, position = (
            tuple_(column, row_id),
            tuple_(
                bindparam("after_value", after[0], type_=column.type),
                bindparam("after_id", after[1], type_=timers.c.id.type),
            ),
        )
        query = query.where(key < position if descending else key > position)
    ordering = (column.desc(), row_id.desc()) if descending else (column, row_id)
    query = query.order_by(*ordering).limit(limit + 1).offset(offset)
    return query, counted


class ListingStatements(Connected):
    def page(
        self,
        *,
        where: TimerFilter | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str = "created_at",
        order: str = "desc",
        after: PagePosition | None = None,
        with_total: bool = True,
    ) -> TimerPage:
        """One statement for the page (and, for the total, `totals.count` unless this is the last
        page), read in one snapshot. In keyset form (`after`) the row comparison
        `(sort column, id) > / < (value, id)` starts an index scan of (column, id) — or (status,
        column, id) — exactly where the last page ended, so a page costs the same at any depth
        (migration 0008's indexes). A filter of one metadata label, in creation order, walks the
        labels' index (`label_of`, migration 0009) the same way and fetches each timer by id (the
        filter is still checked on the timer)."""
        check_sort(sort, order)
        query, counted = page_statement(where or TimerFilter(), sort, order, after, limit, offset)
        with self._transaction() if with_total else self._statement() as conn:
            if with_total:  # the count and the page from one snapshot
                conn.exec_driver_sql(SNAPSHOT)
            rows = conn.execute(query).mappings().all()
            total = exact = None
            if with_total and after is None and len(rows) <= limit and (rows or not offset):
                total, exact = offset + len(rows), True  # the last page: every match is known
            elif with_total:
                total, exact = count_total(conn, *counted)
        page = [Timer.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return TimerPage(
            timers=page,
            total=total,
            next=(getattr(page[-1], sort), page[-1].id) if more else None,
            total_exact=exact,
        )

    def cancel_matching(self, where: TimerFilter) -> int:
        """One UPDATE: every row matching `where` that is `pending` becomes `canceled` (the
        trigger notifies each). A row that a claim locked first is re-checked once the claim
        commits and, being `executing` by then, is left alone; a claim that comes second finds
        the row canceled. Returns how many were canceled."""
        if where.excludes_pending:
            return 0
        with self._statement() as conn:
            return int(conn.execute(cancel_matching_statement(where)).rowcount)
