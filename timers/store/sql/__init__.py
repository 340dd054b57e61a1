"""The PostgreSQL store's SQL text, named: `queries.sql` holds each query under a `-- name --`
header (procrastinate's `sql/queries.sql`), and `queries["name"]` is its text. Statements built
with SQLAlchemy Core live beside the methods that run them, as named module-level data."""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Each query of a file under its `-- name --` header; the comment lines just below a
    header (what the query is for) are left out, and so is trailing whitespace."""
    found: dict[str, str] = {}
    names_and_bodies = _HEADER.split(text)[1:]
    for name, body in zip(names_and_bodies[::2], names_and_bodies[1::2], strict=True):
        lines = body.strip().splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        if name in found:
            raise ValueError(f"query {name!r} is defined twice")
        found[name] = "\n".join(lines).strip()
    return found


def load(name: str = "queries.sql") -> dict[str, str]:
    """The queries of one file of this package."""
    return parse(files(__name__).joinpath(name).read_text(encoding="utf-8"))


queries = load()
