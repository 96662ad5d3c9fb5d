"""The transport floor of a round (``edgecode bench train``): what the cluster's tree of processes
costs with bare gRPC and nothing else.

The same shape as the bench's cluster -- this process as the master, one process per edge, one
per worker, each a gRPC server on loopback, over the same mutual TLS -- but every call is a bare
unary call of raw bytes (the size of the parameters and of a gradient): a worker only waits its
emulated compute and answers, an edge calls its workers at once and answers when all have, the
master calls the edges at once and waits for all. No protobuf, no coding, no decoding, no
authorization interceptor, no coordinator, no heartbeats, no metrics, no gradient: what any
Python gRPC system with this tree pays on this machine before doing any work of its own.

- **grpc floor**: every worker with its share 1/n of the compute;
- **grpc oracle**: the slowest worker left out and its work spread over the others (1/(n-1)).

A round is a unary call per edge and per worker (as edgecode's rounds are), or with
``calls="stream"`` a message each way on one long-lived bidirectional stream per edge and per
worker (what a stream per node would cost at best), or with ``calls="reader"`` the same streams
with every peer reading its requests on a thread of their own and handing them over in a queue
(the shape of edgecode's peers, which must see a cancel while a round runs).
``python -m edgecode.bench.grpc_floor measure [--calls stream|reader] [--plaintext]`` times
both trees of the bench's cluster beside the threads' floor and oracle; the child processes run
as ``... worker|edge --ready FILE ...``.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from edgecode.runtime.certs import CertificateAuthority, Identity
from edgecode.runtime.security import Tls
from edgecode.runtime.server import channel_options

SERVICE = "edgecode.bench.Floor"
METHOD = f"/{SERVICE}/Call"
CHAT = f"/{SERVICE}/Chat"
#: The same stream, its requests read on a thread of their own (as edgecode's peers read them).
CHAT_READER = f"/{SERVICE}/ChatReader"
CALLS = ("unary", "stream", "reader")
#: How long a child may take to start serving.
START_SECONDS = 60.0
#: Timeout of one call (a round of the bench takes tens of milliseconds).
CALL_SECONDS = 10.0


def _bytes(value: bytes) -> bytes:
    return value


Chat = Callable[[Iterator[bytes], Any], Iterator[bytes]]


def _on_reader(chat: Chat) -> Chat:
    """``chat`` with its requests read on a thread of their own and handed over in a queue:
    the shape of :func:`edgecode.runtime.conversations.serve_conversation`, which must see a
    cancel while a round runs (one more thread hand-off per request)."""

    def read(requests: Iterator[bytes], inbox: queue.Queue[bytes | None]) -> None:
        try:
            for request in requests:
                inbox.put(request)
        finally:
            inbox.put(None)

    def handler(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        inbox: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=read, args=(requests, inbox), daemon=True).start()
        yield from chat(iter(inbox.get, None), context)

    return handler


def _serve(
    call: Callable[[bytes, Any], bytes],
    chat: Chat,
    ready: Path,
    tls_dir: str,
    reader_chat: Chat | None = None,
) -> None:
    """Serve ``call`` (unary), ``chat`` (a bidirectional stream) and ``reader_chat`` (default
    ``chat``) with its requests on a reader thread, on a free loopback port; write the port to
    ``ready`` (atomically)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32), options=channel_options()
    )  # the services' pool size and options
    methods = {
        "Call": grpc.unary_unary_rpc_method_handler(call, _bytes, _bytes),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, _bytes, _bytes),
        "ChatReader": grpc.stream_stream_rpc_method_handler(
            _on_reader(reader_chat or chat), _bytes, _bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    address = "127.0.0.1:0"
    if tls_dir:
        port = server.add_secure_port(address, Tls.from_dir(tls_dir).server_credentials())
    else:
        port = server.add_insecure_port(address)
    server.start()
    partial = ready.with_name(ready.name + ".tmp")
    partial.write_text(str(port))
    partial.replace(ready)
    server.wait_for_termination()


def _channel(address: str, tls_dir: str) -> grpc.Channel:
    if tls_dir:
        credentials = Tls.from_dir(tls_dir).channel_credentials
        return grpc.secure_channel(address, credentials, options=channel_options())
    return grpc.insecure_channel(address, options=channel_options())


class _Conversation:
    """One long-lived bidirectional stream: a message out, then its answer."""

    def __init__(self, channel: grpc.Channel, method: str = CHAT) -> None:
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._answers = channel.stream_stream(method)(iter(self._outbox.get, None))

    def send(self, message: bytes) -> None:
        self._outbox.put(message)

    def receive(self) -> bytes:
        return bytes(next(self._answers))

    def close(self) -> None:
        self._outbox.put(None)
        self._answers.cancel()


def _worker(seconds: float, answer_bytes: int, ready: Path, tls_dir: str) -> None:
    answer = b"\x01" * answer_bytes

    def call(request: bytes, context: Any) -> bytes:
        threading.Event().wait(seconds)  # the emulated compute, as the workers wait it
        return answer

    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield call(request, context)

    _serve(call, chat, ready, tls_dir)


def _edge(addresses: Sequence[str], ready: Path, tls_dir: str) -> None:
    channels = [_channel(a, tls_dir) for a in addresses]
    calls = [c.unary_unary(METHOD) for c in channels]

    def call(request: bytes, context: Any) -> bytes:
        pending = [c.future(request, timeout=CALL_SECONDS) for c in calls]
        return bytes([len([p.result() for p in pending])])

    def chat_on(method: str) -> Chat:
        def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            conversations = [_Conversation(c, method) for c in channels]
            try:
                for request in requests:
                    for conversation in conversations:
                        conversation.send(request)
                    yield bytes([len([c.receive() for c in conversations])])
            finally:
                for conversation in conversations:
                    conversation.close()

        return chat

    _serve(call, chat_on(CHAT), ready, tls_dir, chat_on(CHAT_READER))


def _print_measured(calls: str, tls: bool, rounds: int) -> None:
    """The bench's cluster (8 workers in 2 edges, 80 ms of compute in all, one 5x straggler for
    the oracle) as a bare tree, beside the threads' floor and oracle."""
    from edgecode.bench.floor import measure as threads  # the learning stack: only here

    edges = [0, 0, 0, 0, 1, 1, 1, 1]
    straggler = [1.0] * 7 + [5.0]
    ideal = threads([1.0] * 8, 0.08, rounds=max(20, rounds // 2))
    oracle = threads(straggler, 0.08, rounds=max(20, rounds // 2))["oracle_seconds"]
    size = int(ideal["params_bytes"])
    floor = measure([1.0] * 8, edges, 0.08, rounds, size, tls, oracle=False, calls=calls)
    bare = measure(straggler, edges, 0.08, rounds, size, tls, calls=calls)
    print(
        f"{calls} calls, {'mTLS' if tls else 'plaintext'}: "
        f"grpc floor {floor['grpc_floor_seconds'] * 1e3:.2f} ms = "
        f"{floor['grpc_floor_seconds'] / ideal['floor_seconds']:.2f}x the floor "
        f"({ideal['floor_seconds'] * 1e3:.2f} ms); grpc oracle "
        f"{bare['grpc_oracle_seconds'] * 1e3:.2f} ms = "
        f"{bare['grpc_oracle_seconds'] / oracle:.2f}x the oracle ({oracle * 1e3:.2f} ms)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecode.bench.grpc_floor",
        description="measure: the bench's cluster as a tree of processes with bare gRPC calls, "
        "beside the threads' floor and oracle; worker, edge: the tree's child processes",
    )
    parser.add_argument("role", choices=["measure", "worker", "edge"])
    parser.add_argument("--calls", choices=CALLS, default="unary", help="measure: default unary")
    parser.add_argument("--plaintext", action="store_true", help="measure: no TLS")
    parser.add_argument("--rounds", type=int, default=60, help="measure: rounds per tree")
    parser.add_argument("--ready", type=Path, help="worker, edge: where to write the port")
    parser.add_argument("--tls-dir", default="")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--answer-bytes", type=int, default=256)
    parser.add_argument("--workers", default="", help="worker addresses, comma-separated")
    args = parser.parse_args(argv)
    if args.role == "measure":
        if args.rounds < 4:
            parser.error(f"--rounds must be at least 4, got {args.rounds}")
        _print_measured(args.calls, not args.plaintext, args.rounds)
    elif args.ready is None:
        parser.error(f"{args.role}: --ready is required")
    elif args.role == "worker":
        _worker(args.seconds, args.answer_bytes, args.ready, args.tls_dir)
    else:
        _edge(args.workers.split(","), args.ready, args.tls_dir)
    return 0


class _Tree:
    """The child processes of one tree; stopped on exit whatever happened."""

    def __init__(self, folder: Path, tls: bool) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self._ca = CertificateAuthority.create("edgecode grpc floor CA", days=1) if tls else None
        self._count = 0

    def tls_dir(self, role: str) -> str:
        if self._ca is None:
            return ""
        self._count += 1
        name = f"{role}-{self._count}"
        issued = self._ca.issue(Identity(role, name), ips=["127.0.0.1"], days=1)
        return str(issued.write(self.folder / "tls" / name, self._ca.cert_pem))

    def spawn(self, role: str, *args: str) -> str:
        """Start a child; return its address once it serves."""
        self._count += 1
        ready = self.folder / f"{role}-{self._count}.port"
        command = [sys.executable, "-m", "edgecode.bench.grpc_floor", role, "--ready", str(ready)]
        process = subprocess.Popen(
            [*command, "--tls-dir", self.tls_dir(role), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        deadline = time.monotonic() + START_SECONDS
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"grpc floor: the {role} process did not start serving")
            time.sleep(0.02)
        return f"127.0.0.1:{int(ready.read_text())}"

    def __enter__(self) -> _Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


def _rounds(
    channels: Sequence[grpc.Channel], rounds: int, request: bytes, calls: str
) -> list[float]:
    """Seconds of each round: the master's message to every edge, then every edge's answer."""
    method = CHAT_READER if calls == "reader" else CHAT
    conversations = [_Conversation(c, method) for c in channels] if calls != "unary" else []
    unary = [c.unary_unary(METHOD) for c in channels]
    times = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            if conversations:
                for conversation in conversations:
                    conversation.send(request)
                for conversation in conversations:
                    conversation.receive()
            else:
                for pending in [c.future(request, timeout=CALL_SECONDS) for c in unary]:
                    pending.result()
            times.append(time.perf_counter() - start)
    finally:
        for conversation in conversations:
            conversation.close()
    return times


def measure_tree(
    edges: Sequence[Sequence[float]],
    rounds: int = 60,
    payload_bytes: int = 256,
    tls: bool = True,
    calls: str = "unary",
) -> float:
    """Mean round seconds (the last three quarters of ``rounds``) of a tree whose edge e has
    one worker per entry of ``edges[e]``, each waiting that many seconds per call."""
    if not edges or any(not workers for workers in edges) or rounds < 4:
        raise ValueError("grpc floor: every edge needs a worker, and at least 4 rounds")
    if calls not in CALLS:
        raise ValueError(f"grpc floor: calls must be one of {CALLS}, got {calls!r}")
    with (
        tempfile.TemporaryDirectory(prefix="edgecode-grpc-floor-") as folder,
        _Tree(Path(folder), tls) as tree,
    ):
        edge_addresses = []
        for workers in edges:
            addresses = [
                tree.spawn("worker", "--seconds", repr(s), "--answer-bytes", str(payload_bytes))
                for s in workers
            ]
            edge_addresses.append(tree.spawn("edge", "--workers", ",".join(addresses)))
        master = tree.tls_dir("master")
        channels = [_channel(a, master) for a in edge_addresses]
        try:
            times = _rounds(channels, rounds, b"\x02" * payload_bytes, calls)
        finally:
            for channel in channels:
                channel.close()
    return float(np.mean(times[len(times) // 4 :]))


def measure(
    factors: Sequence[float],
    edge_of_worker: Sequence[int],
    compute_seconds: float,
    rounds: int = 60,
    payload_bytes: int = 256,
    tls: bool = True,
    oracle: bool = True,
    calls: str = "unary",
) -> dict[str, float]:
    """The grpc floor and (``oracle``) the grpc oracle of workers slowed by ``factors``, worker w
    under edge ``edge_of_worker[w]`` (the same shares as :func:`edgecode.bench.floor.measure`)."""
    if len(factors) != len(edge_of_worker) or len(factors) < 2:
        raise ValueError("grpc floor: one edge per worker, and at least two workers")
    n = len(factors)
    slowest = int(np.argmax(factors))
    trees = [("floor", list(range(n))), ("oracle", [w for w in range(n) if w != slowest])]
    result = {}
    for name, keep in trees[: 2 if oracle else 1]:
        share = compute_seconds / len(keep)
        edges: dict[int, list[float]] = {}
        for w in keep:
            edges.setdefault(edge_of_worker[w], []).append(share * factors[w])
        result[f"grpc_{name}_seconds"] = measure_tree(
            list(edges.values()), rounds, payload_bytes, tls, calls
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
