"""Workers that share a machine share its cores: the processor-sharing floor of a plan.

The round-time model of :mod:`edgecode.planning.timing` treats workers as independent machines.
Workers on ONE machine (containers or processes on a single host, emulated arm64 workers beside
native ones) are not: each worker computes its whole share every round (the real gradient is not
interruptible; a cancelled round's work still runs to its end), and the machine's cores are
shared with everything else that runs there.

**Model (processor sharing).** Host h has ``C_h`` cores, shared equally among its runnable
threads: the workers that compute under the plan (those holding data) and ``L_h`` others (other
processes, the stack, other users: the machine's *other load*). With ``n`` of the plan's workers
still computing, each runnable thread gets ``C_h / (n + L_h)`` cores. Every worker computes its
whole share every round, so host h's workers, started together, need
``w_w = cpu_w l_w / K + r_w`` CPU seconds each, ``W_h`` in all, and the round cannot end before
the last of them is done. Sorting the works, the phase in which ``n`` workers are left lasts its
work step times ``(n + L_h) / C_h``; summed, the ``n`` terms give ``W_h`` and the ``L_h`` terms
the largest work ``M_h = max_w w_w`` (the other threads take their share for as long as the
host's last worker runs):

    T_round >= F = max_h  (W_h + L_h M_h) / C_h

(0 for a host with no computing worker). ``cpu_w`` is worker w's CPU seconds for the WHOLE data
set (measured by the worker itself, so emulation and contention do not enter it), ``l_w / K``
the fraction it holds and ``r_w`` its CPU seconds per round besides the compute, whatever the
share (answering the round call, serialisation, gRPC's threads; measured by the worker, 0 until
it is; only for a worker that holds data): a share of one partition costs the machine ``r_w``
every round, which the compute alone does not show -- on an emulated worker, several
milliseconds. With ``L_h = 0`` this is the plain throughput floor
``W_h / C_h``; with ``D_h`` equal shares it is ``(W_h / D_h) (D_h + L_h) / C_h``, the mean
work stretched by the contention ``(D_h + L_h) / C_h`` the plan causes. (Until session 27 the
floor used that mean work for unequal shares too, which made a worker holding a sliver LOWER
the floor -- one more computing thread to share the cores with the other load -- though it
finishes at once and leaves the others as slow as before: a bias towards slivers wherever
the floor binds. Now adding data to a host never lowers its floor.)
A plan's planned round time is ``max(E[T], F)``: replication (every worker holding
everything, the fastest answer wins) is cheap for independent machines and ruinous on a
shared one, where it multiplies the host's work by the replication factor; under other load it
is worse still, as every extra copy runs at a ``C_h / (n + L_h)`` fraction of a core.
The single-threaded worker's limit of one core is not in F (the independent model has each
worker's own time), so F is a lower bound where fewer threads than cores are runnable.

**The other load is measured, not assumed.** Each worker reports ``compute_stretch``, the wall
over CPU seconds of its real compute under the plan in use (median of its recent rounds). The
same model predicts ``rho = (D_obs + L_h) / C_h`` for it, with ``D_obs`` the host's workers that
computed, so ``L_h = max(0, C_h rho_h - D_obs_h)``: ``rho_h`` the median of the stretches its
workers reported and ``D_obs_h`` their number. A worker idle under the plan in use still reports
its last stretch, so ``D_obs`` may over-count and ``L`` under-count (towards the plain floor).
A single-threaded worker cannot use an idle core: it measures ``rho = 1`` where ``D_obs < C``,
and the inferred ``L = C - D_obs`` counts the cores it could not use.

Workers with no host (``WorkerSpec.host == ""``) or no CPU measurement (``cpu_seconds == 0``)
add nothing, and without stretches ``L_h = 0``: specs without host information plan exactly as
before, and so do specs without stretch measurements (the plain floor).

>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> pi = dict(host="box", host_cpus=2.0, cpu_seconds=0.4)
>>> spec = ClusterSpec((EdgeSpec("e", (WorkerSpec("a", 0.1, 10.0, **pi),
...                                    WorkerSpec("b", 0.1, 10.0, **pi))),))
>>> round(plan_floor(spec, [[2, 2]], 2), 6)  # both hold everything: 2 x 0.4 s on 2 cores
0.4
>>> busy = dict(pi, compute_stretch=3.0)  # they saw 3x: L = 2 * 3 - 2 = 4 other threads
>>> spec = ClusterSpec((EdgeSpec("e", (WorkerSpec("a", 0.1, 10.0, **busy),
...                                    WorkerSpec("b", 0.1, 10.0, **busy))),))
>>> round(plan_floor(spec, [[2, 2]], 2), 6), round(plan_floor(spec, [[1, 1]], 2), 6)
(1.2, 0.6)
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
    every worker's CPU seconds for the whole data set, ``fixed`` its CPU seconds per round
    besides the compute, ``cores[h]`` host h's cores and ``load[h]`` its other load ``L_h``
    (runnable threads besides the plan's workers)."""

    members: FloatArray  # (H, n, m)
    cpu: FloatArray  # (n, m)
    fixed: FloatArray  # (n, m)
    cores: FloatArray  # (H,)
    load: FloatArray  # (H,)


def other_load(cores: float, stretches: Sequence[float]) -> float:
    """``L = max(0, C * median(rho) - D_obs)``: the other load that explains the stretches
    ``rho`` (wall over CPU seconds) measured by the ``D_obs = len(stretches)`` workers that
    computed on a machine of ``C`` cores (processor sharing: ``rho = (D_obs + L) / C``); 0
    without measurements."""
    if not stretches:
        return 0.0
    return max(0.0, cores * float(np.median(stretches)) - len(stretches))


def host_arrays(spec: ClusterSpec) -> HostArrays | None:
    """The spec's shared hosts, or None when no host has two measured workers (no floor binds
    that the independent model does not already see). A host's cores are the smallest
    ``host_cpus`` its workers reported (1 when none did); its other load is
    :func:`other_load` of the stretches its measured workers reported (0 when none did)."""
    n = len(spec.edges)
    m = max(len(e.workers) for e in spec.edges)
    cpu = np.zeros((n, m))
    fixed = np.zeros((n, m))
    where: dict[str, list[tuple[int, int]]] = {}
    cores: dict[str, float] = {}
    stretches: dict[str, list[float]] = {}
    for i, edge in enumerate(spec.edges):
        for j, w in enumerate(edge.workers):
            if not w.host or w.cpu_seconds <= 0:
                continue
            cpu[i, j] = w.cpu_seconds
            fixed[i, j] = w.round_cpu_seconds
            where.setdefault(w.host, []).append((i, j))
            if w.host_cpus > 0:
                cores[w.host] = min(cores.get(w.host, np.inf), w.host_cpus)
            if w.compute_stretch > 0:
                stretches.setdefault(w.host, []).append(w.compute_stretch)
    shared = sorted(h for h, slots in where.items() if len(slots) >= 2)
    if not shared:
        return None
    members = np.zeros((len(shared), n, m))
    for k, host in enumerate(shared):
        for i, j in where[host]:
            members[k, i, j] = 1.0
    cores_h = np.array([cores.get(h, 1.0) for h in shared])
    load = np.array(
        [other_load(c, stretches.get(h, [])) for c, h in zip(cores_h, shared, strict=True)]
    )
    return HostArrays(members=members, cpu=cpu, fixed=fixed, cores=cores_h, load=load)


def floors(hosts: HostArrays | None, loads: IntArray, K: object) -> FloatArray:
    """The processor-sharing floor ``F`` (B,) of B plans given by integer ``loads`` (B, n, m)
    out of ``K`` partitions (an int or one per plan); zeros without shared hosts."""
    loads = np.asarray(loads)
    B = loads.shape[0]
    if hosts is None:
        return np.zeros(B)
    K_all = np.broadcast_to(np.asarray(K, dtype=np.float64), (B,))
    work = loads * hosts.cpu / K_all[:, None, None] + (loads > 0) * hosts.fixed  # (B, n, m)
    per_host = np.einsum("bnm,hnm->bh", work, hosts.members) / hosts.cores
    if not np.any(hosts.load):  # no other load measured: the plain floor W / C
        return np.asarray(per_host.max(axis=1), dtype=np.float64)
    # the other load's L threads take their share for as long as the host's LAST worker runs
    longest = np.max(work[:, None] * hosts.members[None], axis=(2, 3))  # (B, H)
    per_host = per_host + hosts.load * longest / hosts.cores
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


__all__ = ["HostArrays", "floors", "host_arrays", "other_load", "plan_floor", "planned_seconds"]
