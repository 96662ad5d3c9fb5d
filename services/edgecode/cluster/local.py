"""A local cluster: coordinator, master, edge aggregators and workers as separate OS processes on
loopback, every one bound to port 0 and reporting its ports through a ready file.

Mutual TLS is on by default with nothing for the user to do: at start an ephemeral CA is made in
memory, issues a certificate to every process (and an ``admin`` one for the launcher's own
clients: :meth:`LocalCluster.client`) into ``WORKDIR/tls/NAME/`` (mode 0600), and is then
forgotten: its key is never written, so nothing else can join. ``insecure=True`` runs plaintext.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from edgecode.runtime.certs import CertificateAuthority, Identity
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import coordinator_pb2, coordinator_pb2_grpc

if TYPE_CHECKING:
    from edgecode.coordinator.client import GossipClient
    from edgecode.master.client import MasterClient

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
#: The identity of the launcher's own clients (job API and membership queries).
CLIENT_NAME = "local-admin"
#: Validity of the ephemeral certificates (a local cluster lives minutes to days).
CERT_DAYS = 30
#: Thread-count variables set to 1 for local workers and peers (OpenMP: torch, OpenBLAS, MKL).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _environment(role: str) -> dict[str, str]:
    """A child's environment: ours without EDGECODE_* (flags configure it); workers and peers
    share this machine's cores, so one BLAS/torch thread each unless the user set it (torch's
    default is a thread per core in EVERY worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    if role in ("worker", "peer"):
        for key in THREAD_VARIABLES:
            env.setdefault(key, "1")
    return env


@dataclass(frozen=True)
class WorkerSetup:
    name: str
    edge: str
    straggle: str = "none"
    link_seconds: float = 0.0


@dataclass(frozen=True)
class EdgeSetup:
    name: str
    link_seconds: float = 0.0


@dataclass(frozen=True)
class ClusterSetup:
    edges: tuple[EdgeSetup, ...]
    workers: tuple[WorkerSetup, ...]
    compute_seconds: float = 0.0
    seed: int = 0
    spec_file: str = ""
    heartbeat_seconds: float = 0.5
    dead_after_seconds: float = 3.0
    #: rounds on one long-lived stream per child node (False: a call per child per round)
    streams: bool = True


def default_setup(
    edges: int = 2,
    workers_per_edge: int = 4,
    straggler: str = "slow:factor=5",
    slow_link_seconds: float = 0.02,
    compute_seconds: float = 0.08,
    seed: int = 0,
) -> ClusterSetup:
    """The README's cluster: one persistent straggler (the second worker of the first edge) and
    one edge with a slow link (the last edge)."""
    edge_setups = tuple(
        EdgeSetup(f"edge-{e}", slow_link_seconds if e == edges - 1 and edges > 1 else 0.0)
        for e in range(edges)
    )
    workers = tuple(
        WorkerSetup(
            f"edge-{e}-w{w}",
            f"edge-{e}",
            straggler if (e, w) == (0, min(1, workers_per_edge - 1)) else "none",
        )
        for e in range(edges)
        for w in range(workers_per_edge)
    )
    return ClusterSetup(edge_setups, workers, compute_seconds, seed)


@dataclass
class Process:
    name: str
    role: str
    args: list[str]
    ready_file: Path
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.info["address"])

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.info['metrics_port']}/metrics"


class LocalCluster:
    """Start with :meth:`start` (or as a context manager); every process is terminated on exit."""

    def __init__(
        self,
        setup: ClusterSetup,
        workdir: Path | None = None,
        python: str = sys.executable,
        insecure: bool = False,
        data_dirs: tuple[str, ...] = (),
    ) -> None:
        self.setup = setup
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgecode-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._python = python
        self.insecure = insecure
        #: folders whose files jobs may name (the master's data_dirs)
        self.data_dirs = tuple(str(d) for d in data_dirs)
        self.processes: dict[str, Process] = {}
        self.client_tls: Tls | None = None

    # ---- certificates -----------------------------------------------------------------------
    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    def _issue_certificates(self) -> None:
        """An ephemeral CA (in memory only) and a certificate per process and for the client."""
        if self.insecure:
            return
        ca = CertificateAuthority.create("edgecode local cluster CA", days=CERT_DAYS)
        for identity in self._identities():
            issued = ca.issue(identity, dns=["localhost"], ips=["127.0.0.1"], days=CERT_DAYS)
            issued.write(self.tls_dir / identity.name, ca.cert_pem)
        self.client_tls = Tls.from_dir(self.tls_dir / CLIENT_NAME)

    def _identities(self) -> list[Identity]:
        identities = [Identity("coordinator", "coordinator"), Identity("master", "master")]
        identities += [Identity("edge", e.name) for e in self.setup.edges]
        identities += [Identity("worker", w.name) for w in self.setup.workers]
        return [*identities, Identity("admin", CLIENT_NAME)]

    def _security_args(self, name: str) -> list[str]:
        if self.insecure:
            return ["--insecure", "true"]
        return ["--tls-dir", str(self.tls_dir / name)]

    def client(self) -> MasterClient:
        """A client of the master's job API with the launcher's certificate (close it after)."""
        from edgecode.master.client import MasterClient

        return MasterClient(self.master_address, self.client_tls)

    def channel(self, address: str) -> grpc.Channel:
        """A channel to any process of this cluster with the launcher's certificate."""
        return make_channel(address, self.client_tls)

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        s = self.setup
        try:
            self._issue_certificates()
            coordinator = self._spawn(
                "coordinator",
                "coordinator",
                [
                    "--heartbeat-seconds",
                    str(s.heartbeat_seconds),
                    "--dead-after-seconds",
                    str(s.dead_after_seconds),
                ]
                + (["--spec", s.spec_file] if s.spec_file else []),
            )
            self._wait_ready([coordinator])
            address = coordinator.address
            nodes = [
                self._spawn(
                    e.name,
                    "aggregator",
                    [
                        "--name",
                        e.name,
                        "--coordinator",
                        address,
                        "--link-seconds",
                        str(e.link_seconds),
                        "--streams",
                        str(s.streams).lower(),
                    ],
                )
                for e in s.edges
            ]
            nodes += [
                self._spawn(
                    w.name,
                    "worker",
                    [
                        "--name",
                        w.name,
                        "--edge",
                        w.edge,
                        "--coordinator",
                        address,
                        "--straggle",
                        w.straggle,
                        "--compute-seconds",
                        str(s.compute_seconds),
                        "--link-seconds",
                        str(w.link_seconds),
                        "--seed",
                        str(s.seed + i),
                    ],
                )
                for i, w in enumerate(s.workers)
            ]
            nodes.append(self.spawn_master())
            self._wait_ready(nodes)
            self.wait_registered(len(s.edges) + len(s.workers))
        except BaseException:
            self.stop()
            raise

    def spawn_master(self) -> Process:
        return self._spawn(
            "master",
            "master",
            [
                "--coordinator",
                self.processes["coordinator"].address,
                "--checkpoint-dir",
                str(self.workdir / "checkpoints"),
                "--streams",
                str(self.setup.streams).lower(),
            ]
            + (["--data-dirs", os.pathsep.join(self.data_dirs)] if self.data_dirs else []),
        )

    def _spawn(self, name: str, role: str, extra: list[str]) -> Process:
        ready = self.workdir / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        log_file = self.workdir / f"{name}.log"
        args = [
            self._python,
            "-m",
            "edgecode",
            role,
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--ready-file",
            str(ready),
            *self._security_args(name),
            *extra,
        ]
        with log_file.open("ab") as handle:
            popen = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=_environment(role)
            )
        process = Process(name, role, args, ready, log_file, popen)
        self.processes[name] = process
        return process

    def _wait_ready(self, processes: list[Process], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for process in processes:
            while not process.ready_file.exists():
                assert process.popen is not None
                if process.popen.poll() is not None:
                    raise RuntimeError(
                        f"{process.name} exited with {process.popen.returncode}: {self.tail(process.name)}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{process.name} did not start within {timeout} s: {self.tail(process.name)}"
                    )
                time.sleep(0.05)
            process.info = json.loads(process.ready_file.read_text())

    def wait_registered(self, count: int, timeout: float = START_TIMEOUT) -> None:
        channel = self.channel(self.processes["coordinator"].address)
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    nodes = stub.GetCluster(coordinator_pb2.GetClusterRequest(), timeout=5).nodes
                    if len(nodes) >= count:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only some of {count} nodes registered within {timeout} s")
                time.sleep(0.1)
        finally:
            channel.close()

    @property
    def master_address(self) -> str:
        return self.processes["master"].address

    def tail(self, name: str, lines: int = 20) -> str:
        path = (
            self.processes[name].log_file
            if name in self.processes
            else self.workdir / f"{name}.log"
        )
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- faults ---------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL a process: a crash, not a shutdown."""
        process = self.processes[name]
        if process.popen is not None and process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process is alive but answers nothing (a straggler)."""
        assert self.processes[name].popen is not None
        os.kill(self.processes[name].popen.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self, name: str) -> None:
        assert self.processes[name].popen is not None
        os.kill(self.processes[name].popen.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self, name: str, timeout: float = START_TIMEOUT) -> Process:
        """Kill a process if it runs and start it again with the same arguments (a new port)."""
        self.kill(name)
        old = self.processes[name]
        old.ready_file.unlink(missing_ok=True)
        with old.log_file.open("ab") as handle:
            popen = subprocess.Popen(
                old.args, stdout=handle, stderr=subprocess.STDOUT, env=_environment(old.role)
            )
        process = Process(name, old.role, old.args, old.ready_file, old.log_file, popen)
        self.processes[name] = process
        self._wait_ready([process], timeout)
        return process

    def restart_master(self) -> Process:
        self.kill("master")
        master = self.spawn_master()
        self._wait_ready([master])
        return master

    def rss_mb(self, role: str | None = None) -> dict[str, float]:
        """Resident memory now (VmRSS) of each live process, in MB (Linux /proc)."""
        return self._status_mb("VmRSS:", role)

    def peak_rss_mb(self, role: str | None = None) -> dict[str, float]:
        """Peak resident memory (VmHWM) of each live process, in MB (Linux /proc)."""
        return self._status_mb("VmHWM:", role)

    def _status_mb(self, key: str, role: str | None) -> dict[str, float]:
        peaks = {}
        for name, process in self.processes.items():
            if (
                process.popen is None
                or process.popen.poll() is not None
                or (role and process.role != role)
            ):
                continue
            try:
                status = Path(f"/proc/{process.popen.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith(key):
                    peaks[name] = int(line.split()[1]) / 1024
        return peaks

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes.values():
            if process.popen is not None and process.popen.poll() is None:
                try:
                    os.kill(process.popen.pid, signal.SIGCONT)
                    process.popen.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            if process.popen is None:
                continue
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)


# ---- gossip learning: a coordinator and peers only ---------------------------------------------


@dataclass(frozen=True)
class PeerSetup:
    """One peer process: its name (ending in its index), straggler emulation and seed."""

    name: str
    straggle: str = "none"
    compute_seconds: float = 0.0
    seed: int = 0


def gossip_peers(
    n_peers: int, straggle: str = "none", compute_seconds: float = 0.0, seed: int = 0
) -> tuple[PeerSetup, ...]:
    """``n_peers`` peers ``peer-0`` .. ``peer-{n-1}`` with the same emulation, seeds seed + i."""
    return tuple(
        PeerSetup(f"peer-{i}", straggle, compute_seconds, seed + i) for i in range(n_peers)
    )


class LocalGossipCluster(LocalCluster):
    """A coordinator and gossip peers as separate processes (no master, edges or workers).

    >>> with LocalGossipCluster(gossip_peers(4)) as cluster:  # doctest: +SKIP
    ...     cluster.gossip_client().start(GossipJobSpec(rounds=20))
    """

    def __init__(
        self,
        peers: tuple[PeerSetup, ...],
        workdir: Path | None = None,
        python: str = sys.executable,
        heartbeat_seconds: float = 0.5,
        dead_after_seconds: float = 3.0,
        insecure: bool = False,
    ) -> None:
        setup = ClusterSetup(
            edges=(),
            workers=(),
            heartbeat_seconds=heartbeat_seconds,
            dead_after_seconds=dead_after_seconds,
        )
        self.peers = peers
        super().__init__(setup, workdir, python, insecure=insecure)

    def __enter__(self) -> LocalGossipCluster:
        self.start()
        return self

    def start(self) -> None:
        s = self.setup
        try:
            self._issue_certificates()
            coordinator = self._spawn(
                "coordinator",
                "coordinator",
                [
                    "--heartbeat-seconds",
                    str(s.heartbeat_seconds),
                    "--dead-after-seconds",
                    str(s.dead_after_seconds),
                ],
            )
            self._wait_ready([coordinator])
            self._wait_ready([self.spawn_peer(p) for p in self.peers])
            self.wait_registered(len(self.peers))
        except BaseException:
            self.stop()
            raise

    def _identities(self) -> list[Identity]:
        return [
            Identity("coordinator", "coordinator"),
            *(Identity("peer", p.name) for p in self.peers),
            Identity("admin", CLIENT_NAME),
        ]

    def gossip_client(self) -> GossipClient:
        """A client of the coordinator's gossip job API with the launcher's certificate."""
        from edgecode.coordinator.client import GossipClient

        return GossipClient(self.coordinator_address, self.client_tls)

    def spawn_peer(self, peer: PeerSetup) -> Process:
        return self._spawn(
            peer.name,
            "peer",
            [
                "--name",
                peer.name,
                "--coordinator",
                self.processes["coordinator"].address,
                "--straggle",
                peer.straggle,
                "--compute-seconds",
                str(peer.compute_seconds),
                "--seed",
                str(peer.seed),
            ],
        )

    def restart_peer(self, name: str, timeout: float = START_TIMEOUT) -> Process:
        """Kill a peer if it runs, start it again under the same name and wait until the
        coordinator lists it at its new address."""
        self.kill(name)
        process = self.spawn_peer(next(p for p in self.peers if p.name == name))
        self._wait_ready([process], timeout)
        channel = self.channel(self.coordinator_address)
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    nodes = stub.GetCluster(coordinator_pb2.GetClusterRequest(), timeout=5).nodes
                    if any(n.name == name and n.address == process.address for n in nodes):
                        return process
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not register again within {timeout} s")
                time.sleep(0.05)
        finally:
            channel.close()

    @property
    def coordinator_address(self) -> str:
        return self.processes["coordinator"].address

    def peer_address(self, index: int) -> str:
        return self.processes[self.peers[index].name].address
