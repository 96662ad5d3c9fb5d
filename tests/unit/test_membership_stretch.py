"""A worker's heartbeat carries its CPU seconds and its compute stretch (runtime.membership)."""

from __future__ import annotations

import threading
from typing import Any

from edgecode.runtime.membership import Membership
from edgecode.runtime.start import membership
from edgecode.v1 import coordinator_pb2


class RecordingStub:
    """The coordinator's stub: registration answers a short period, heartbeats are kept."""

    def __init__(self) -> None:
        self.beats: list[Any] = []
        self.two = threading.Event()

    def Register(self, request: Any, timeout: float) -> Any:
        return coordinator_pb2.RegisterResponse(heartbeat_seconds=0.001)

    def Heartbeat(self, request: Any, timeout: float) -> Any:
        self.beats.append(request)
        if len(self.beats) >= 2:
            self.two.set()
        return coordinator_pb2.HeartbeatResponse(known=True)


def test_heartbeats_carry_cpu_seconds_and_the_compute_stretch() -> None:
    member = membership(
        "127.0.0.1:9",
        "w0",
        "worker",
        "w0:1",
        edge="e0",
        cpu_seconds=lambda: 0.25,
        stretch=lambda: 3.5,
        round_cpu=lambda: 0.004,
    )
    assert member is not None
    stub = RecordingStub()
    member._stub = stub  # type: ignore[assignment]
    member.start()
    try:
        assert stub.two.wait(timeout=30)
    finally:
        member.stop()
    first = stub.beats[0]
    assert (first.name, first.cpu_seconds, first.compute_stretch) == ("w0", 0.25, 3.5)
    assert first.round_cpu_seconds == 0.004


def test_a_node_without_measurements_sends_zeros() -> None:
    node = coordinator_pb2.Node(name="e0", role="edge", address="e0:1")
    member = Membership("127.0.0.1:9", node, None)
    stub = RecordingStub()
    member._stub = stub  # type: ignore[assignment]
    member.start()
    try:
        assert stub.two.wait(timeout=30)
    finally:
        member.stop()
    beat = stub.beats[0]
    assert (beat.cpu_seconds, beat.compute_stretch, beat.round_cpu_seconds) == (0.0, 0.0, 0.0)
