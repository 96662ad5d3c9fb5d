"""CPU per message of the ways a round can talk to a node, measured side by side.

A small echo server runs in a subprocess (sync or grpc.aio); this process calls it one message
after the other, ``--messages`` times per way, and prints per message the wall time, this
client's CPU and the server process's CPU (``/proc/PID/stat``). The ways:

- ``unary``: a blocking unary call;
- ``future``: ``.future(...).result()`` on a channel with nothing else in flight (grpc starts
  the channel's call thread for every call: what a round did before warm channels);
- ``warm``: the same with one idle call held open on the channel (``runtime.server.keep_warm``);
- ``stream``: one message each way on a long-lived bidirectional stream;
- ``aio``: a grpc.aio unary call against a grpc.aio server.

``--gap SECONDS`` waits that long after each message (the idle time between rounds); the cost
per message then includes waking the threads that hand a call over, which sleep in between.

Used for docs/notes/round-overhead.md (what a long-lived stream per node would save). Run:
``python scripts/rpc_cost.py --messages 2000 --repeats 2``, and
``python scripts/rpc_cost.py --messages 500 --ways unary,warm,stream --gap 0.01``.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

SERVICE = "rpccost.Echo"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
PAYLOAD = b"x" * 300  # about a small round request
WARM_UP = 100


def _same(data: bytes) -> bytes:
    return data


def _handlers(unary: Callable[..., Any], stream: Callable[..., Any]) -> Any:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _same, _same),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, _same, _same),
        },
    )


def serve_sync() -> None:
    def unary(request: bytes, context: Any) -> bytes:
        return request

    def stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield from requests

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((_handlers(unary, stream),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def serve_aio() -> None:
    async def unary(request: bytes, context: Any) -> bytes:
        return request

    async def stream(requests: Any, context: Any) -> Any:
        async for request in requests:
            yield request

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(unary, stream),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # USER_HZ is 100 on Linux


def _sync_way(way: str, channel: grpc.Channel) -> Callable[[], None]:
    """One message of ``way`` on ``channel`` (a callable; the stream is opened here)."""
    unary = channel.unary_unary(UNARY, _same, _same)
    if way == "unary":
        return lambda: unary(PAYLOAD) and None
    if way == "future":
        return lambda: unary.future(PAYLOAD).result() and None
    if way == "warm":  # an idle call held open, as keep_warm does (a call object that is
        # dropped is cancelled on garbage collection: the closure keeps it)
        held = channel.stream_stream(STREAM, _same, _same)(iter(queue.Queue().get, None))

        def warm() -> None:
            assert held is not None
            unary.future(PAYLOAD).result()

        return warm
    outbox: queue.Queue[bytes | None] = queue.Queue()
    replies = channel.stream_stream(STREAM, _same, _same)(iter(outbox.get, None))

    def one() -> None:
        outbox.put(PAYLOAD)
        next(replies)

    return one


def measure(way: str, messages: int, gap: float = 0.0) -> dict[str, float]:
    kind = "aio" if way == "aio" else "sync"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    try:
        address = f"127.0.0.1:{int(server.stdout.readline())}"
        if way == "aio":
            started = asyncio.run(_aio_calls(address, messages, server.pid, gap))
        else:
            with grpc.insecure_channel(address) as channel:
                one = _sync_way(way, channel)
                for _ in range(WARM_UP):
                    one()
                started = (process_cpu(server.pid), time.process_time(), time.perf_counter())
                for _ in range(messages):
                    one()
                    if gap:
                        time.sleep(gap)
        ended = (process_cpu(server.pid), time.process_time(), time.perf_counter())
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    server_cpu, client_cpu, wall = (b - a for a, b in zip(started, ended, strict=True))
    return {
        "wall_us": 1e6 * wall / messages,
        "client_cpu_us": 1e6 * client_cpu / messages,
        "server_cpu_us": 1e6 * server_cpu / messages,
    }


async def _aio_calls(
    address: str, messages: int, pid: int, gap: float
) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        unary = channel.unary_unary(UNARY, _same, _same)
        for _ in range(WARM_UP):
            await unary(PAYLOAD)
        started = (process_cpu(pid), time.process_time(), time.perf_counter())
        for _ in range(messages):
            await unary(PAYLOAD)
            if gap:
                await asyncio.sleep(gap)
    return started


WAYS = ("unary", "future", "warm", "stream", "aio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per way and repeat")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all the ways")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"a subset of {','.join(WAYS)}")
    parser.add_argument(
        "--gap", type=float, default=0.0, help="seconds idle after each message (default 0)"
    )
    parser.add_argument("--serve", choices=("sync", "aio"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        (serve_aio if args.serve == "aio" else serve_sync)()
        return 0
    ways = args.ways.split(",")
    unknown = sorted(set(ways) - set(WAYS))
    if unknown:
        parser.error(f"--ways: unknown {', '.join(unknown)}; choose from {','.join(WAYS)}")
    if args.messages < 1:
        parser.error(f"--messages must be at least 1, got {args.messages}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not 0 <= args.gap <= 1:  # also refuses nan
        parser.error(f"--gap must be between 0 and 1 seconds, got {args.gap}")
    print(f"{'way':8s} {'wall us':>9s} {'client CPU us':>14s} {'server CPU us':>14s}")
    for _ in range(args.repeats):
        for way in ways:
            row = measure(way, args.messages, args.gap)
            print(
                f"{way:8s} {row['wall_us']:9.1f} {row['client_cpu_us']:14.1f} "
                f"{row['server_cpu_us']:14.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
