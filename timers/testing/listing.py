"""The twin of `timers.store.listing`: pages of timers and the bulk cancel of a filter."""

from __future__ import annotations

from timers.models import TimerStatus
from timers.storage import PagePosition, TimerFilter, TimerPage, check_sort
from timers.testing.table import TimerTable, matches


class InMemoryListing(TimerTable):
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
        check_sort(sort, order)
        descending = order == "desc"
        with self._operation():
            rows = [t for t in self._timers.values() if matches(t, where or TimerFilter())]
        total = len(rows) if with_total else None
        rows.sort(key=lambda t: (getattr(t, sort), t.id), reverse=descending)
        if after is not None:
            rows = [
                t
                for t in rows
                if (
                    (getattr(t, sort), t.id) < after
                    if descending
                    else (getattr(t, sort), t.id) > after
                )
            ]
        page = rows[offset : offset + limit]
        more = len(rows) > offset + limit
        return TimerPage(
            timers=page,
            total=total,
            next=(getattr(page[-1], sort), page[-1].id) if more else None,
            total_exact=None if total is None else True,
        )

    def cancel_matching(self, where: TimerFilter) -> int:
        if where.excludes_pending:
            return 0
        with self._operation() as now:
            doomed = [
                t
                for t in self._timers.values()
                if t.status is TimerStatus.PENDING and matches(t, where)
            ]
            for timer in doomed:
                self._update(timer, now, status=TimerStatus.CANCELED)
        return len(doomed)
