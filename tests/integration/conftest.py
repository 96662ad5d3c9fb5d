"""Fixtures for integration tests: real gRPC servers on port 0 in this process.

A server is built with the one server factory (:func:`edgecode.runtime.server.create_server`),
so it has the same limits, health and reflection as a deployed service; tests talk to it over a
real loopback channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from edgecode.runtime.server import MAX_MESSAGE_BYTES, Service, create_server, make_channel

Registration = tuple[Callable[[Any, grpc.Server], None], Any, str]


@dataclass
class InProcessServers:
    """Starts servers and opens channels; everything is stopped/closed at teardown."""

    services: list[Service] = field(default_factory=list)
    channels: list[grpc.Channel] = field(default_factory=list)

    def serve(
        self, register: Sequence[Registration], max_message_bytes: int = MAX_MESSAGE_BYTES
    ) -> str:
        """Start a SERVING server with these servicers on a free port; returns its address."""
        service = create_server(register, port=0, max_message_bytes=max_message_bytes)
        service.server.start()
        service.set_serving(True)
        self.services.append(service)
        return f"127.0.0.1:{service.port}"

    def channel(self, address: str) -> grpc.Channel:
        channel = make_channel(address)
        self.channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for service in self.services:
            service.server.stop(grace=None).wait(10)


@pytest.fixture
def inproc_servers() -> Iterator[InProcessServers]:
    servers = InProcessServers()
    try:
        yield servers
    finally:
        servers.close()
