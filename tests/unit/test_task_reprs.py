"""The `argsrepr`/`kwargsrepr` headers of a `celery` callback's message are exactly what Celery's
`send_task` writes (`saferepr` of `args or ()` and `kwargs or {}`), though worked out more
cheaply: checked on many generated arguments, JSON values as a timer stores them."""

from __future__ import annotations

import random
from typing import Any

import pytest
from celery.utils.saferepr import saferepr

from timers.callbacks.task_publisher import shown

LIMIT, LEVELS = 1024, 3  # Celery's defaults: argsrepr_maxsize, task_repr_maxlevels
TEXTS = ["", "a", "unpaid", "it's", 'say "hi"', "back\\slash", "line\nbreak", "tab\t", "café",
         "日本", "x" * 300, "emoji 🎉", "\x00"]  # fmt: skip
SCALARS = [None, True, False, 0, -1, 42, 2**70, 0.1, -2.5, 1e16, 1e-7, 3.0]


def value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth < 6 and roll < 0.25:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 6 and roll < 0.45:
        return {rng.choice(TEXTS): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if roll < 0.7:
        return rng.choice(TEXTS)
    return rng.choice(SCALARS)


def celerys(value: list[Any] | dict[str, Any]) -> str:
    empty: tuple[()] | dict[str, Any] = {} if isinstance(value, dict) else ()
    return saferepr(value or empty, LIMIT, maxlevels=LEVELS)


@pytest.mark.parametrize("seed", range(20))
def test_the_headers_show_the_arguments_as_celery_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        args = [value(rng, 1) for _ in range(rng.randint(0, 5))]
        kwargs = {rng.choice(TEXTS): value(rng, 1) for _ in range(rng.randint(0, 4))}
        assert shown(args, LIMIT, LEVELS) == celerys(args), args
        assert shown(kwargs, LIMIT, LEVELS) == celerys(kwargs), kwargs


@pytest.mark.parametrize(
    "args",
    [[], {}, [42], ["it's"], [{"f": {"a": {"b": {"c": 1}}}}], [[[[1]]]], [[[1]]], ["x" * 2000],
     [1.5, None, True], ["line\nbreak"], {"deep": [[{"k": []}]]}],
)  # fmt: skip
def test_the_cases_that_differ_from_a_plain_repr(args: list[Any] | dict[str, Any]) -> None:
    assert shown(args, LIMIT, LEVELS) == celerys(args)
