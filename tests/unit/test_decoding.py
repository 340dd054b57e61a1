"""JSON read from the database: decoded by the C decoder with no Python per number, and an integer
too long for Python kept as its text (no service needed)."""

from __future__ import annotations

import json
import sys
from types import FrameType

import pytest

from timers.models import TooLongInteger
from timers.store import load_json


def test_json_from_the_database_runs_no_python_per_integer() -> None:
    text = json.dumps({"payload": list(range(10_000)), "n": [-1, 0, 12]})
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":  # a Python function (a C one is "c_call")
            calls += 1

    sys.setprofile(count)
    try:
        value = load_json(text)
    finally:
        sys.setprofile(None)
    assert value == {"payload": list(range(10_000)), "n": [-1, 0, 12]}
    assert calls < 10, f"{calls} Python calls to decode 10,003 integers"


def test_an_integer_too_long_for_python_is_read_as_its_text() -> None:
    digits = "9" * 5000
    value = load_json(f'{{"n": -{digits}, "m": [1, 2.5, "3"]}}')
    assert isinstance(value["n"], TooLongInteger) and value["n"] == f"-{digits}"
    assert value["m"] == [1, 2.5, "3"]
    with pytest.raises(json.JSONDecodeError):
        load_json('{"n": 1')
