"""How many timers a filter matches, at a bounded cost: `GET /timers`'s `total`.

Counting is a scan of every match, so a count is exact only while it is cheap; past that, the
answer is PostgreSQL's planner estimate (from the statistics autovacuum's ANALYZE keeps), flagged
as such. The planner is asked first (`EXPLAIN`, planning only, well under a millisecond): an exact
count is made when it expects fewer than EXACT_COUNT_LIMIT matches found for at most
COUNT_COST_LIMIT (its own units). The count itself stops at EXACT_COUNT_LIMIT matches, so statistics
that are out of date cost at most that much before the estimate is answered instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from timers.storage import EXACT_COUNT_LIMIT
from timers.store.sql import queries

# The planner's cost (about one sequential page read per unit) above which the matches are
# estimated, not counted. Counting 100,000 entries of an index costs about 5,000 (some 15 ms);
# a scan that filters many rows to find a few, or fetches each from the table, costs far more.
COUNT_COST_LIMIT = 10_000.0


@dataclass(frozen=True)
class Plan:
    """What the planner expects of reading every match: how many, and its cost."""

    rows: float
    cost: float

    @property
    def cheap(self) -> bool:
        """Whether an exact count is worth making."""
        return self.rows < EXACT_COUNT_LIMIT and self.cost <= COUNT_COST_LIMIT


class _Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON)` of a statement (`queries["explain"]`), its parameters bound as
    usual."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return queries["explain"].format(statement=compiler.process(element.statement, **kw))


def plan(conn: Connection, source: Any, conditions: list[Any]) -> Plan:
    """The planner's expectation for the rows of `source` matching `conditions`."""
    [document] = conn.execute(_Explain(select(literal(1)).select_from(source).where(*conditions)))
    top = document[0][0]["Plan"]
    return Plan(rows=float(top["Plan Rows"]), cost=float(top["Total Cost"]))


def count(conn: Connection, source: Any, conditions: list[Any]) -> tuple[int, bool]:
    """How many rows of `source` match `conditions`, and whether that is exact: counted (up to
    EXACT_COUNT_LIMIT) when the planner expects that to be cheap, else its estimate."""
    expected = plan(conn, source, conditions)
    if expected.cheap:
        matching = (
            select(literal(1))
            .select_from(source)
            .where(*conditions)
            .limit(EXACT_COUNT_LIMIT)
            .subquery()
        )
        counted = int(conn.execute(select(func.count()).select_from(matching)).scalar_one())
        if counted < EXACT_COUNT_LIMIT:
            return counted, True
    return max(round(expected.rows), EXACT_COUNT_LIMIT if expected.cheap else 0), False
