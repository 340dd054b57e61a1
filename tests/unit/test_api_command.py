"""`timers api`'s process count: `--workers`, else WEB_CONCURRENCY, else one; a bad value is a
one-line error naming where it came from, before anything starts."""

from __future__ import annotations

import pytest

from timers import cli


def test_a_bad_web_concurrency_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "two")
    assert cli.main(["api"]) == 2
    assert "WEB_CONCURRENCY: a whole number, got 'two'" in capsys.readouterr().err


def test_workers_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["api", "--workers", "0"])
    assert exited.value.code == 2
    assert "at least 1, got 0" in capsys.readouterr().err


def test_web_concurrency_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert cli._default_workers() == 3
    monkeypatch.delenv("WEB_CONCURRENCY")
    assert cli._default_workers() == 1
