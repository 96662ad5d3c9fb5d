"""Workers that share a machine share its cores: the throughput floor of a plan.

The round-time model of :mod:`edgecode.planning.timing` treats workers as independent machines.
Workers on ONE machine (containers or processes on a single host, emulated arm64 workers beside
native ones) are not: each worker computes its whole share every round (the real gradient is not
interruptible; a cancelled round's work still runs to its end), so over many rounds a host with
``C`` cores must get through the CPU work of all its workers every round:

    T_round >= F = max_h  sum_{w on h} cpu_w * l_w / K  /  C_h

``cpu_w`` is worker w's CPU seconds for the WHOLE data set (measured by the worker itself, so
emulation and contention do not enter it), ``l_w / K`` the fraction it holds and ``C_h`` the
host's cores. A plan's planned round time is ``max(E[T], F)``: replication (every worker holding
everything, the fastest answer wins) is cheap for independent machines and ruinous on a shared
one, where it multiplies the host's work by the replication factor.

Workers with no host (``WorkerSpec.host == ""``) or no CPU measurement (``cpu_seconds == 0``)
add nothing, so specs without host information plan exactly as before.

>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> pi = dict(host="box", host_cpus=2.0)
>>> spec = ClusterSpec((EdgeSpec("e", (WorkerSpec("a", 0.1, 10.0, cpu_seconds=0.4, **pi),
...                                    WorkerSpec("b", 0.1, 10.0, cpu_seconds=0.4, **pi))),))
>>> round(plan_floor(spec, [[2, 2]], 2), 6)  # both hold everything: 2 x 0.4 s on 2 cores
0.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgecode.planning.spec import ClusterSpec, Plan

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class HostArrays:
    """Padded ``(n_edges, max workers per edge)`` arrays of the shared hosts.

    ``members[h]`` is the 0/1 mask of the workers on host h (with a CPU measurement), ``cpu``
    every worker's CPU seconds for the whole data set, ``cores[h]`` host h's cores."""

    members: FloatArray  # (H, n, m)
    cpu: FloatArray  # (n, m)
    cores: FloatArray  # (H,)


def host_arrays(spec: ClusterSpec) -> HostArrays | None:
    """The spec's shared hosts, or None when no host has two measured workers (no floor binds
    that the independent model does not already see). A host's cores are the smallest
    ``host_cpus`` its workers reported (1 when none did)."""
    n = len(spec.edges)
    m = max(len(e.workers) for e in spec.edges)
    cpu = np.zeros((n, m))
    where: dict[str, list[tuple[int, int]]] = {}
    cores: dict[str, float] = {}
    for i, edge in enumerate(spec.edges):
        for j, w in enumerate(edge.workers):
            if not w.host or w.cpu_seconds <= 0:
                continue
            cpu[i, j] = w.cpu_seconds
            where.setdefault(w.host, []).append((i, j))
            if w.host_cpus > 0:
                cores[w.host] = min(cores.get(w.host, np.inf), w.host_cpus)
    shared = sorted(h for h, slots in where.items() if len(slots) >= 2)
    if not shared:
        return None
    members = np.zeros((len(shared), n, m))
    for k, host in enumerate(shared):
        for i, j in where[host]:
            members[k, i, j] = 1.0
    return HostArrays(members=members, cpu=cpu, cores=np.array([cores.get(h, 1.0) for h in shared]))


def floors(hosts: HostArrays | None, loads: IntArray, K: object) -> FloatArray:
    """The throughput floor ``F`` (B,) of B plans given by integer ``loads`` (B, n, m) out of
    ``K`` partitions (an int or one per plan); zeros without shared hosts."""
    loads = np.asarray(loads)
    B = loads.shape[0]
    if hosts is None:
        return np.zeros(B)
    K_all = np.broadcast_to(np.asarray(K, dtype=np.float64), (B,))
    work = loads * hosts.cpu / K_all[:, None, None]  # (B, n, m) CPU seconds per round
    per_host = np.einsum("bnm,hnm->bh", work, hosts.members) / hosts.cores
    return np.asarray(per_host.max(axis=1), dtype=np.float64)


def plan_floor(spec: ClusterSpec, loads: Sequence[Sequence[int]], K: int) -> float:
    """The floor of one plan given by its workers' partition counts per edge (ragged rows)."""
    hosts = host_arrays(spec)
    if hosts is None:
        return 0.0
    padded = np.zeros((1, *hosts.cpu.shape), dtype=np.int64)
    for i, row in enumerate(loads):
        padded[0, i, : len(row)] = row
    return float(floors(hosts, padded, K)[0])


def planned_seconds(spec: ClusterSpec, plan: Plan, expected: float) -> float:
    """``max(expected, F)``: a plan's planned round time from its expected time on the
    independent-worker model."""
    held = {w.name: w.partitions for e in plan.edges for w in e.workers}
    loads = [[held.get(w.name, 0) for w in e.workers] for e in spec.edges]
    return max(float(expected), plan_floor(spec, loads, plan.partitions))


__all__ = ["HostArrays", "floors", "host_arrays", "plan_floor", "planned_seconds"]
