"""How `create_once` answers a batch whose timers may carry idempotency keys: the rule is the same
whichever store holds the timers, so it is written once, here; a store only finds and inserts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from timers.models import Timer
from timers.storage.values import Created, IdempotencyKeyReused, NewTimer

# A key as the unique index sees it: (owner, key).
KeyPair = tuple[str, str]


def first_uses(batch: Sequence[NewTimer]) -> dict[KeyPair, int]:
    """Each key's first use in the batch (its index): the one item of the batch that may make a
    timer under that key."""
    first: dict[KeyPair, int] = {}
    for index, new in enumerate(batch):
        if new.idempotency is not None:
            first.setdefault((new.idempotency.owner, new.idempotency.key), index)
    return first


def makes_a_timer(batch: Sequence[NewTimer], earlier: Mapping[KeyPair, object]) -> list[int]:
    """The items of the batch that insert a row: those without a key, and each key's first use
    unless the key already names a timer (`earlier`)."""
    first = first_uses(batch)
    return [
        index
        for index, new in enumerate(batch)
        if new.idempotency is None
        or (
            (pair := (new.idempotency.owner, new.idempotency.key)) not in earlier
            and first[pair] == index
        )
    ]


def answer_batch(
    batch: Sequence[NewTimer],
    made: Callable[[int], Timer],
    earlier: Mapping[KeyPair, tuple[Timer, str]],
) -> list[Created]:
    """The answer to each item of the batch, in its order: the timer the item made (`made(index)`,
    for the items `makes_a_timer` names), or the timer its key names already, made earlier
    (`earlier`: the timer and its request hash) or by the key's first use in this batch, with
    `created` False. Raises IdempotencyKeyReused, at the first item whose key names a timer made
    from a different request."""
    first = first_uses(batch)
    answers = []
    for index, new in enumerate(batch):
        key = new.idempotency
        if key is None:
            answers.append(Created(made(index), True))
            continue
        pair = (key.owner, key.key)
        if pair in earlier:
            (timer, request), created = earlier[pair], False
        else:
            owner = batch[first[pair]].idempotency
            assert owner is not None  # the key's first use carries it
            timer, request, created = made(first[pair]), owner.request, first[pair] == index
        if request != key.request:
            raise IdempotencyKeyReused(key.key, timer.id, index)
        answers.append(Created(timer, created))
    return answers
