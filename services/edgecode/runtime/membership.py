"""Registration with the coordinator and the heartbeat loop (workers and edges)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger(__name__)


#: Where Linux keeps an id of the running kernel, shared by every container on the machine.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def machine_id(configured: str = "") -> str:
    """The machine this process runs on: ``configured`` when given, else a digest of the
    kernel's boot id (the same in every container and process of one machine, different across
    machines), else of the host name."""
    if configured:
        return configured
    try:
        seed = BOOT_ID.read_text().strip()
    except OSError:
        seed = socket.gethostname()
    return "machine-" + hashlib.sha256(seed.encode()).hexdigest()[:12]


def machine_cpus(configured: float = 0.0) -> float:
    """The machine's cores: ``configured`` when > 0, else what the OS reports."""
    return float(configured) if configured > 0 else float(os.cpu_count() or 1)


class Membership:
    """Registers a node and keeps heartbeating; re-registers when the coordinator forgot it
    (after a coordinator restart). Runs in a daemon thread until :meth:`stop`. With ``tls`` the
    node speaks to the coordinator as its certificate's identity, which must be ``node.name``.
    ``cpu_seconds``, ``stretch`` and ``round_cpu`` (a worker's) are read at every heartbeat; :meth:`nudge` sends
    one at once."""

    def __init__(
        self,
        coordinator: str,
        node: coordinator_pb2.Node,
        tls: Tls | None = None,
        cpu_seconds: Callable[[], float] | None = None,
        stretch: Callable[[], float] | None = None,
        round_cpu: Callable[[], float] | None = None,
    ) -> None:
        self._channel = make_channel(coordinator, tls)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self._node = node
        self._cpu_seconds = cpu_seconds
        self._stretch = stretch
        self._round_cpu = round_cpu
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        interval = 1.0
        registered = False
        while not self._stop.is_set():
            try:
                if not registered:
                    response = self._stub.Register(
                        coordinator_pb2.RegisterRequest(node=self._node), timeout=5.0
                    )
                    interval = response.heartbeat_seconds or interval
                    registered = True
                    log.info("registered %s with the coordinator", self._node.name)
                else:
                    cpu = self._cpu_seconds() if self._cpu_seconds is not None else 0.0
                    rho = self._stretch() if self._stretch is not None else 0.0
                    fixed = self._round_cpu() if self._round_cpu is not None else 0.0
                    known = self._stub.Heartbeat(
                        coordinator_pb2.HeartbeatRequest(
                            name=self._node.name,
                            cpu_seconds=cpu,
                            compute_stretch=rho,
                            round_cpu_seconds=fixed,
                        ),
                        timeout=5.0,
                    )
                    registered = known.known
            except grpc.RpcError as exc:
                log.debug("coordinator unreachable: %s", exc.code())
                registered = False
            self._wake.wait(interval)
            self._wake.clear()

    def nudge(self) -> None:
        """Heartbeat now (a worker's CPU measurement changed) rather than at the next period."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._channel.close()


def write_ready_file(path: str | None, **info: Any) -> None:
    """Atomically write the service's bound addresses (for launchers of port-0 services)."""
    if not path:
        return
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
    os.replace(tmp, target)
