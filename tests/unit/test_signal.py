"""``publishing.Signal``: the one-shot wakeup ``TaskEngine.wait`` sleeps on."""

from __future__ import annotations

import threading
import time

from taskengine.coordinator.publishing import Signal


def test_wait_times_out_unset() -> None:
    signal = Signal()
    began = time.monotonic()
    assert signal.wait(0.05) is False
    assert time.monotonic() - began >= 0.04
    assert not signal.is_set()


def test_set_wakes_a_waiting_thread_and_stays_set() -> None:
    signal = Signal()
    woken = threading.Event()

    def waiter() -> None:
        if signal.wait(10):
            woken.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    signal.set()
    thread.join(10)
    assert woken.is_set()
    assert signal.is_set()
    # Once set, every later wait returns at once, with or without a timeout.
    assert signal.wait(0) is True
    assert signal.wait() is True


def test_setting_twice_is_harmless() -> None:
    signal = Signal()
    signal.set()
    signal.set()
    assert signal.wait(0) is True


def _race(signal: Signal, action: str, errors: list[BaseException]) -> None:
    try:
        if action == "set":
            signal.set()
        else:
            assert signal.wait(5)
    except BaseException as exc:
        errors.append(exc)


def test_racing_sets_and_waits_never_raise() -> None:
    for _ in range(200):
        signal = Signal()
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_race, args=(signal, action, errors))
            for action in ("wait", "set", "set")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
