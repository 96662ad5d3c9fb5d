"""``edgecode bench scale``: the round path and the planner as the cluster grows.

For N in 8, 16, 32, 64 workers (real processes on this machine), the same total emulated
compute (a worker holding the fraction f of the data spends f * COMPUTE_SECONDS), hierarchical
coding with about sqrt(N) edges (the planner's plan) beside flat cyclic repetition (edges
forward every worker's answer) and uncoded: the mean round time, the master's and the edges'
CPU seconds per round (from /proc), the payload bytes the master received per round (from its
own metrics), and the peak resident memory per worker. The master's per-round cost must grow
with the number of edges, not of workers: with hgc every edge sends one decoded vector, with
flat every worker's vector reaches the master. The planner's time for clusters up to 1,000
workers is in the same table (targets: < 50 ms at 16 workers, < 1 s at 200).
"""

from __future__ import annotations

import math
import os
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup
from edgecode.master.client import MasterClient, summary
from edgecode.records import JobConfig

#: Emulated seconds to process the whole data set (constant over N).
COMPUTE_SECONDS = 0.08
SIZES = (8, 16, 32, 64)
PLANNER_SIZES = (4, 16, 64, 200, 1000)
_TICKS = os.sysconf("SC_CLK_TCK")


def _edges(n: int) -> int:
    """About sqrt(n) edges, a power of two that divides n."""
    edges: int = 2 ** int(math.log2(max(1.0, math.sqrt(n))))
    while n % edges:
        edges //= 2
    return max(1, int(edges))


def _setup(n: int, seed: int) -> ClusterSetup:
    edges = _edges(n)
    per_edge = n // edges
    return ClusterSetup(
        tuple(EdgeSetup(f"edge-{e}") for e in range(edges)),
        tuple(
            WorkerSetup(f"edge-{e}-w{w:02d}", f"edge-{e}", "none")
            for e in range(edges)
            for w in range(per_edge)
        ),
        COMPUTE_SECONDS,
        seed=seed,
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _received_bytes(url: str) -> float:
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    match = re.search(r"^edgecode_master_received_bytes_total (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _pids(cluster: LocalCluster, role: str) -> list[int]:
    return [
        p.popen.pid
        for p in cluster.processes.values()
        if p.role == role and p.popen is not None and p.popen.poll() is None
    ]


def bench_scale(
    sizes: Sequence[int] = SIZES, rounds: int = 20, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (N, scheme); see the module docstring."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        setup = _setup(n, seed)
        with LocalCluster(setup) as cluster:
            client = MasterClient(cluster.master_address)
            master_pid = _pids(cluster, "master")[0]
            edge_pids = _pids(cluster, "aggregator")
            metrics_url = cluster.processes["master"].metrics_url
            try:
                for scheme in ("hgc", "flat", "uncoded"):
                    config = JobConfig(
                        scheme=scheme,
                        rounds=rounds,
                        seed=seed,
                        s_edge=-1,
                        s_flat=1,
                        checkpoint_every=0,
                        dataset="synthetic-logistic:n=4000,d=50",
                        round_deadline_seconds=60.0,
                    )
                    before = (
                        _cpu_seconds(master_pid),
                        sum(_cpu_seconds(p) for p in edge_pids),
                        _received_bytes(metrics_url),
                    )
                    status = client.wait(client.submit(config), timeout=900)
                    after = (
                        _cpu_seconds(master_pid),
                        sum(_cpu_seconds(p) for p in edge_pids),
                        _received_bytes(metrics_url),
                    )
                    result = summary(status)
                    done = max(1, result["rounds"])
                    seconds = result["round_seconds"][done // 2 :]
                    rows.append(
                        {
                            "workers": n,
                            "edges": len(setup.edges),
                            "scheme": scheme,
                            "state": result["state"],
                            "mean_round_ms": float(np.mean(seconds)) * 1e3,
                            "master_cpu_ms_per_round": (after[0] - before[0]) / done * 1e3,
                            "edges_cpu_ms_per_round": (after[1] - before[1]) / done * 1e3,
                            "master_received_kb_per_round": (after[2] - before[2]) / done / 1e3,
                            "max_worker_peak_rss_mb": max(
                                cluster.peak_rss_mb("worker").values(), default=float("nan")
                            ),
                        }
                    )
            finally:
                client.close()
    return rows


def bench_planner_sizes(seed: int = 0) -> list[dict[str, Any]]:
    """The planner's time at every size of :data:`PLANNER_SIZES` (one run each)."""
    from edgecode.bench.planner import bench_planner

    shapes = [(_edges(n), n // _edges(n)) for n in PLANNER_SIZES]
    return bench_planner(shapes, np.random.default_rng(seed))
