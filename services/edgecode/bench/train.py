"""``edgecode bench train``: training round times on a real local cluster, side by side in one run.

Emulated compute of 80 ms for the whole data set (5 ms per partition at K = 16), 8 workers in 2
edges, real gradients as well; the planner's hgc job chooses K as well (``partitions = 0``), the
other jobs keep K = 16:

- one persistent straggler at 5x: the planner's hgc plan vs uncoded (target <= 0.5x), and the
  ignore-stragglers baseline with its accuracy beside it;
- no stragglers (deterministic compute): the planner's plan vs uncoded (target <= 1.15x), and
  fixed s_e = s_w = 1 against what the load bound predicts: uncoded's round time plus the extra
  compute of holding D = K (s_e+1)(s_w+1) / N partitions instead of K / N;
- peak resident memory of every worker process (target < 150 MB);
- beside them, in the same run, the ideal floor (8 threads and a barrier in one process, the
  same emulated and real compute) and the oracle (the straggler dropped and its work spread):
  targets planned hgc <= 1.6x the floor without stragglers, <= 1.3x the oracle with the
  straggler; and a per-round breakdown of where hgc's and uncoded's time goes.
- mutual TLS: the same jobs on two identical clusters, one with mTLS (the default) and one
  plaintext (``--insecure``), interleaved: steady round time with mTLS / plaintext (target <= 1.1);
- ``--verify``: fixed hgc with and without it on one cluster, interleaved (target <= 1.2).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.bench import grpc_floor
from edgecode.bench.floor import measure
from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.master.client import MasterClient, summary
from edgecode.records import JobConfig

PER_PARTITION = 0.005
#: The whole data set: 5 ms per partition at K = 16.
COMPUTE_SECONDS = PER_PARTITION * 16
PARTITIONS = 16


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _jobs(client: MasterClient, configs: list[JobConfig], skip: int) -> list[dict[str, Any]]:
    results = []
    for config in configs:
        status = client.wait(client.submit(config), timeout=600)
        result = summary(status)
        # Steady state: the second half of the rounds (a re-plan is adopted in the background
        # once ready, a few rounds after profiling).
        seconds = result["round_seconds"][max(skip, len(result["round_seconds"]) // 2) :]
        result["steady_round_seconds"] = float(np.mean(seconds)) if seconds else float("nan")
        result["breakdown"] = _breakdown(result, status)
        results.append(result)
    return results


def _breakdown(result: dict[str, Any], status: Any) -> dict[str, float]:
    """Where a steady-state round's time goes (ms): at the master (sending the parameters,
    waiting, decoding, the optimizer step) and, for the workers that answered in the last round,
    their compute and what their answer cost beyond it (serialization, transfer, the edge)."""
    half = len(result["round_seconds"]) // 2

    def mean_ms(key: str) -> float:
        values = result[key][half:]
        return float(np.mean(values)) * 1e3 if values else float("nan")

    arrived = [t for t in status.last_timings if t.arrived]
    compute = float(np.max([t.compute_seconds for t in arrived])) * 1e3 if arrived else float("nan")
    response = float(np.max([t.seconds for t in arrived])) * 1e3 if arrived else float("nan")
    round_ms = float(np.mean(result["round_seconds"][half:])) * 1e3
    wait = mean_ms("wait_seconds")
    return {
        "round_ms": round_ms,
        "master_send_ms": mean_ms("send_seconds"),
        "master_wait_ms": wait,
        "master_decode_ms": mean_ms("decode_seconds"),
        "optimizer_step_ms": mean_ms("step_seconds"),
        "worker_compute_ms": compute,
        "worker_answer_beyond_compute_ms": response - compute,
        "edge_and_master_beyond_workers_ms": wait - response,
        "master_other_ms": round_ms - mean_ms("send_seconds") - wait - mean_ms("step_seconds"),
    }


def _floors(
    setup: Any, factors: list[float], rounds: int, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The threads' floor and oracle, and the bare gRPC tree's (the oracle with a straggler)."""
    ideal = measure(factors, COMPUTE_SECONDS, rounds=max(20, rounds // 2), seed=seed)
    edges = [e.name for e in setup.edges]
    bare = grpc_floor.measure(
        factors,
        [edges.index(w.edge) for w in setup.workers],
        COMPUTE_SECONDS,
        rounds=max(20, rounds // 2),
        payload_bytes=int(ideal["params_bytes"]),
        oracle=max(factors) > min(factors),
    )
    return ideal, bare


def _transport_floor(
    planned: float, ideal: dict[str, float], bare: dict[str, float]
) -> dict[str, float | None]:
    """The bare gRPC tree's round (:mod:`edgecode.bench.grpc_floor`) against the threads' floor
    and oracle, and planned hgc against it."""
    oracle = bare.get("grpc_oracle_seconds")
    return {
        "grpc_floor_seconds": bare["grpc_floor_seconds"],
        "grpc_oracle_seconds": oracle,
        "grpc_floor_over_floor": bare["grpc_floor_seconds"] / ideal["floor_seconds"],
        "grpc_oracle_over_oracle": None if oracle is None else oracle / ideal["oracle_seconds"],
        "planned_over_grpc_floor": planned / bare["grpc_floor_seconds"],
        "planned_over_grpc_oracle": None if oracle is None else planned / oracle,
    }


def _unary_hgc(setup: Any, config: JobConfig, skip: int) -> float:
    """Steady-state round seconds of ``config`` on the same cluster with streams off (a
    RunRound / ComputeGradient call per child node per round)."""
    with LocalCluster(replace(setup, streams=False)) as cluster:
        client = cluster.client()
        (result,) = _jobs(client, [config], skip)
        client.close()
    return float(result["steady_round_seconds"])


def _scheme_jobs(
    setup: Any, configs: list[JobConfig], skip: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The jobs' results on one cluster, and every worker's peak memory (MB) after them."""
    with LocalCluster(setup) as cluster:
        client = cluster.client()
        results = _jobs(client, configs, skip)
        client.close()
        memory = {
            name: _peak_rss_mb(p.popen.pid)
            for name, p in cluster.processes.items()
            if p.role == "worker" and p.popen is not None
        }
    return results, memory


def _configs(base: dict[str, Any]) -> list[JobConfig]:
    """Planned hgc, uncoded, ignore and fixed hgc (s_e = s_w = 1). The planner chooses K too
    (partitions = 0): the oracle spreads the straggler's work in fractions, which K = 16 over 7
    workers cannot."""
    return [
        JobConfig(scheme="hgc", s_edge=-1, **{**base, "partitions": 0}),
        JobConfig(scheme="uncoded", **base),
        JobConfig(scheme="ignore", s_flat=1, **base),
        JobConfig(scheme="hgc", s_edge=1, s_worker=1, **base),
    ]


def bench_training(rounds: int = 60, seed: int = 0, *, calls: bool = True) -> dict[str, Any]:
    """Both scenarios; round times are means after the planner's profiling rounds. ``calls``:
    also run the planned hgc job on a cluster with streams off (a call per child node per round;
    ``planned_hgc_unary_seconds`` and ``streams_over_unary`` are None without it)."""
    skip = 5  # the planner profiles 3 rounds and re-places the data; compare steady state
    base: dict[str, Any] = {
        "rounds": rounds,
        "partitions": PARTITIONS,
        "seed": seed,
        "checkpoint_every": 0,
    }
    report: dict[str, Any] = {}
    for scenario, straggle in (
        ("persistent_straggler", "slow:factor=5"),
        ("no_stragglers", "none"),
    ):
        setup = default_setup(
            straggler=straggle,
            slow_link_seconds=0.0,
            compute_seconds=COMPUTE_SECONDS,
            seed=seed,
        )
        configs = _configs(base)
        (planned, uncoded, ignore, fixed), memory = _scheme_jobs(setup, configs, skip)
        # The same planned job over a call per child node per round (streams off), after it
        unary = _unary_hgc(setup, configs[0], skip) if calls else None
        n_workers = len(setup.workers)
        factors = [5.0 if w.straggle != "none" else 1.0 for w in setup.workers]
        ideal, bare = _floors(setup, factors, rounds, seed)
        load_fixed = PARTITIONS * 2 * 2 // n_workers
        predicted_fixed = (
            uncoded["steady_round_seconds"] + (load_fixed - PARTITIONS // n_workers) * PER_PARTITION
        )
        report[scenario] = {
            "floor_seconds": ideal["floor_seconds"],
            "oracle_seconds": ideal["oracle_seconds"] if straggle != "none" else None,
            "planned_over_floor": planned["steady_round_seconds"] / ideal["floor_seconds"],
            "planned_over_oracle": planned["steady_round_seconds"] / ideal["oracle_seconds"]
            if straggle != "none"
            else None,
            **_transport_floor(planned["steady_round_seconds"], ideal, bare),
            "breakdown": {"hgc": planned["breakdown"], "uncoded": uncoded["breakdown"]},
            "planned_hgc_seconds": planned["steady_round_seconds"],
            "planned_hgc_unary_seconds": unary,
            "streams_over_unary": None
            if unary is None
            else planned["steady_round_seconds"] / unary,
            "planned_predicted_seconds": planned["predicted_round_seconds"],
            "uncoded_seconds": uncoded["steady_round_seconds"],
            "ignore_seconds": ignore["steady_round_seconds"],
            "fixed_s1_seconds": fixed["steady_round_seconds"],
            "fixed_s1_predicted_by_load_bound_seconds": predicted_fixed,
            "planned_over_uncoded": planned["steady_round_seconds"]
            / uncoded["steady_round_seconds"],
            "ignore_over_uncoded": ignore["steady_round_seconds"] / uncoded["steady_round_seconds"],
            "fixed_over_load_bound_prediction": fixed["steady_round_seconds"] / predicted_fixed,
            "accuracy": {
                "hgc": planned["accuracy"],
                "uncoded": uncoded["accuracy"],
                "ignore": ignore["accuracy"],
            },
            "final_loss": {
                "hgc": planned["loss"][-1],
                "uncoded": uncoded["loss"][-1],
                "ignore": ignore["loss"][-1],
            },
            "plan": planned["plan"],
            "worker_peak_rss_mb": memory,
            "max_worker_peak_rss_mb": max(memory.values()),
            "round_seconds": {
                r["scheme"] + ("" if r is not fixed else "-s1"): r["round_seconds"]
                for r in (planned, uncoded, ignore, fixed)
            },
        }
    return report


def bench_tls(rounds: int = 40, repeats: int = 4, seed: int = 0) -> dict[str, Any]:
    """Round time with mutual TLS vs plaintext: two identical clusters (no stragglers, the
    planner's hgc), both up at once, the same job run on each in turn ``repeats`` times so that
    machine noise hits both alike; the ratio of the median steady-state round times."""
    skip = 5
    setup = default_setup(
        straggler="none", slow_link_seconds=0.0, compute_seconds=COMPUTE_SECONDS, seed=seed
    )
    config = JobConfig(
        scheme="hgc", s_edge=-1, rounds=rounds, partitions=PARTITIONS, seed=seed, checkpoint_every=0
    )
    # Per job, the median steady-state round (a round that another process's burst on a busy
    # machine stretched does not move it); across jobs, the median again.
    per_job: dict[str, list[float]] = {"mtls": [], "plaintext": []}
    with LocalCluster(setup) as secure, LocalCluster(setup, insecure=True) as plain:
        clients = {"mtls": secure.client(), "plaintext": plain.client()}
        try:
            for _ in range(repeats):
                for name, client in clients.items():
                    (result,) = _jobs(client, [config], skip)
                    per_job[name].append(float(np.median(result["round_seconds"][skip:])))
        finally:
            for client in clients.values():
                client.close()
    medians = {name: float(np.median(values)) for name, values in per_job.items()}
    return {
        "rounds": rounds,
        "repeats": repeats,
        "job_median_round_seconds": per_job,
        "median_round_seconds": medians,
        "mtls_over_plaintext": medians["mtls"] / medians["plaintext"],
    }


def bench_verify(
    rounds: int = 40, repeats: int = 3, seed: int = 0, slack: float | None = None
) -> dict[str, Any]:
    """What ``--verify`` costs: on one cluster with the persistent 5x straggler, fixed hgc
    (s_e = s_w = 1: every edge has a spare answer to compare) with and without verify, the jobs
    interleaved ``repeats`` times; the ratio of the median steady-state round times (target
    <= 1.2). Verify waits up to ``verify_slack_seconds`` for a spare answer once a round is
    decodable, so its cost is at most that slack per round and layer; ``slack`` None: the
    default of ``JobConfig``."""
    skip = 5
    setup = default_setup(
        straggler="slow:factor=5", slow_link_seconds=0.0, compute_seconds=COMPUTE_SECONDS, seed=seed
    )
    plain = JobConfig(
        scheme="hgc",
        s_edge=1,
        s_worker=1,
        rounds=rounds,
        partitions=PARTITIONS,
        seed=seed,
        checkpoint_every=0,
    )
    checked = replace(plain, verify=True)
    if slack is not None:
        checked = replace(checked, verify_slack_seconds=slack)
    configs = {"plain": plain, "verify": checked}
    per_job: dict[str, list[float]] = {name: [] for name in configs}
    with LocalCluster(setup) as cluster:
        client = cluster.client()
        try:
            for _ in range(repeats):
                for name, config in configs.items():
                    (result,) = _jobs(client, [config], skip)
                    per_job[name].append(float(np.median(result["round_seconds"][skip:])))
        finally:
            client.close()
    medians = {name: float(np.median(values)) for name, values in per_job.items()}
    return {
        "rounds": rounds,
        "repeats": repeats,
        "verify_slack_seconds": configs["verify"].verify_slack_seconds,
        "job_median_round_seconds": per_job,
        "median_round_seconds": medians,
        "verify_over_plain": medians["verify"] / medians["plain"],
    }
