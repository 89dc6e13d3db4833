"""The reaper notices a broker that came back (outage or restart) and then re-sends without waiting."""

from __future__ import annotations

import pytest

from facequeue.settings import Settings
from workers import reaper


@pytest.fixture
def sweeps(monkeypatch):  # type: ignore[no-untyped-def]
    state = {"view": reaper.BrokerView(identity="run-1"), "down": False}
    calls: list[bool] = []

    def view() -> reaper.BrokerView:
        if state["down"]:
            raise ConnectionError("broker unreachable")
        return state["view"]

    monkeypatch.setattr(reaper, "broker_view", view)
    monkeypatch.setattr(reaper, "reap_once", lambda settings, view, recovered: calls.append(recovered) or 0)
    return state, calls


def test_recovery_sweeps_after_start_outage_and_restart(sweeps) -> None:  # type: ignore[no-untyped-def]
    state, calls = sweeps
    sweeper = reaper.Reaper(Settings())
    sweeper.sweep()
    sweeper.sweep()
    assert calls == [True, False]  # a worker's first sweep re-sends what is missing at once
    state["down"] = True
    sweeper.sweep()  # nothing can be sent while the broker is away
    state["down"] = False
    sweeper.sweep()
    sweeper.sweep()
    assert calls[2:] == [True, False]
    state["view"] = reaper.BrokerView(identity="run-2")  # restarted between two sweeps
    sweeper.sweep()
    sweeper.sweep()
    assert calls[4:] == [True, False]
