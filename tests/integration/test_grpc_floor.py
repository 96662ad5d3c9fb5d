"""The transport floor of ``edgecode bench train``: a tree of real processes with bare gRPC calls."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from edgecode.bench import grpc_floor
from edgecode.bench.grpc_floor import METHOD, _channel, _Tree, measure, measure_tree

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("calls", ["unary", "stream", "reader"])
def test_a_round_of_the_bare_tree_waits_for_every_worker_of_every_edge(calls: str) -> None:
    seconds = measure_tree([[0.01], [0.01, 0.08]], rounds=8, tls=False, calls=calls)
    assert math.isfinite(seconds)
    assert 0.08 <= seconds < 0.08 + 1.0


def test_the_tree_speaks_mutual_tls_only(tmp_path: Path) -> None:
    with _Tree(tmp_path, tls=True) as tree:
        address = tree.spawn("worker", "--seconds", "0.0", "--answer-bytes", "100")
        plain = grpc.insecure_channel(address)
        with pytest.raises(grpc.RpcError):
            plain.unary_unary(METHOD)(b"x", timeout=5)
        plain.close()
        secure = _channel(address, tree.tls_dir("master"))
        assert secure.unary_unary(METHOD)(b"x", timeout=5) == b"\x01" * 100
        secure.close()
        processes = list(tree.processes)
    assert all(p.poll() is not None for p in processes)


def test_a_child_that_cannot_start_is_an_error_and_nothing_is_left_running(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        with _Tree(tmp_path, tls=False) as tree:
            tree.spawn("worker", "--seconds", "not-a-number")
    assert tree.processes and all(p.poll() is not None for p in tree.processes)


def test_the_oracle_leaves_out_the_slowest_worker_and_spreads_its_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trees: list[list[list[float]]] = []

    def fake(edges: list[list[float]], *args: object) -> float:
        trees.append([list(e) for e in edges])
        return float(len(trees))

    monkeypatch.setattr(grpc_floor, "measure_tree", fake)
    result = measure([1, 1, 5, 1], [0, 0, 1, 1], 0.4, rounds=10)
    assert result == {"grpc_floor_seconds": 1.0, "grpc_oracle_seconds": 2.0}
    floor, oracle = trees
    assert floor == [[0.1, 0.1], [0.5, 0.1]]
    assert oracle == [[pytest.approx(0.4 / 3)] * 2, [pytest.approx(0.4 / 3)]]
    assert measure([1, 1], [0, 0], 0.2, oracle=False) == {"grpc_floor_seconds": 3.0}


@pytest.mark.parametrize(
    ("edges", "rounds", "calls"),
    [
        ([], 10, "unary"),
        ([[0.01], []], 10, "unary"),
        ([[0.01]], 3, "unary"),
        ([[0.01]], 8, "pigeon"),
    ],
    ids=str,
)
def test_measure_tree_refuses_a_tree_it_cannot_time(
    edges: list[list[float]], rounds: int, calls: str
) -> None:
    with pytest.raises(ValueError, match="grpc floor"):
        measure_tree(edges, rounds=rounds, calls=calls)


def test_measure_refuses_workers_without_edges() -> None:
    with pytest.raises(ValueError, match="one edge per worker"):
        measure([1, 1, 1], [0, 0], 0.1)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["measure", "--rounds", "3"], "--rounds must be at least 4, got 3"),
        (["worker", "--seconds", "0.1"], "worker: --ready is required"),
        (["measure", "--calls", "pigeon"], "--calls"),
    ],
)
def test_the_command_refuses_bad_flags_by_name(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        grpc_floor.main(argv)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err
