"""The benchmark's Celery apps load as `celery -A <module>` loads them (no broker contacted)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["bench.beat_app", "bench.user_app"])
def test_celery_finds_the_app(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_USER_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("BENCH_BEAT_ENTRIES", "3")
    loaded = importlib.import_module(module)
    app = loaded.app
    assert app.main == "bench-user"
    if module == "bench.beat_app":
        assert sorted(app.conf.beat_schedule) == ["s0", "s1", "s2"]
