"""The services' health servicer: a watch's end never waits on grpc's polling thread for the
lock a sender holds (the stock servicer's deadlock, runtime/server.py)."""

from __future__ import annotations

import threading

import pytest
from grpc_health.v1 import health

from edgecode.runtime.server import HealthServicer

pytestmark = pytest.mark.timeout(30)


def _end_while_locked(servicer: health.HealthServicer) -> tuple[bool, list[object]]:
    """End a registered watch while another thread holds the servicer's lock (as a Watch or a
    ``set`` does while it sends); whether the end returned at once, and what the watcher got."""
    told: list[object] = []
    servicer._send_response_callbacks[""] = {told.append}
    end = servicer._on_close_callback(told.append, "")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with servicer._lock:
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(5)
    ender = threading.Thread(target=end)  # grpc's polling thread, in the server
    ender.start()
    ender.join(1.0)
    returned = not ender.is_alive()
    release.set()
    holder.join(5)
    ender.join(5)
    return returned, told


def test_a_watch_end_returns_while_the_lock_is_held_and_is_handled_after() -> None:
    servicer = HealthServicer(experimental_non_blocking=True)
    returned, told = _end_while_locked(servicer)
    assert returned
    for _ in range(100):  # the thread it started takes the lock once it is free
        if told:
            break
        threading.Event().wait(0.05)
    assert told == [None]
    assert servicer._send_response_callbacks[""] == set()


def test_the_stock_servicer_blocks_there() -> None:
    """The bug the subclass guards against: the stock callback waits for the lock."""
    returned, told = _end_while_locked(health.HealthServicer(experimental_non_blocking=True))
    assert not returned
    assert told == [None]
