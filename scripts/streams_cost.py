"""Rounds on streams vs a call per child node per round, side by side (measurement helper).

    python scripts/streams_cost.py [--pairs 3] [--rounds 200] [--straggler none|slow:factor=5]

The cluster of ``edgecode bench train`` (8 workers in 2 edges, its emulated compute), started
twice per pair -- ``streams = true`` and ``streams = false`` (a RunRound / ComputeGradient call
per child per round), in alternating order -- each running the same hgc job with s_edge =
s_worker = 0 (every worker, 2 partitions each; no planner, so no re-plan's noise). Prints,
per run, the mean round time of the second half of the rounds and the CPU every process spent
per round over the whole job (``/proc/PID/stat``, Linux), then the ratios streams / calls.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

from edgecode.bench.train import COMPUTE_SECONDS, PARTITIONS
from edgecode.cluster.local import ClusterSetup, LocalCluster, default_setup
from edgecode.master.client import summary
from edgecode.records import JobConfig

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def run(setup: ClusterSetup, rounds: int) -> tuple[float, dict[str, float]]:
    """(mean round seconds of the second half, CPU ms per round per process role)."""
    with LocalCluster(setup) as cluster:
        client = cluster.client()
        pids = {name: p.popen.pid for name, p in cluster.processes.items() if p.popen is not None}
        before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        config = JobConfig(
            scheme="hgc",
            s_edge=0,
            s_worker=0,
            rounds=rounds,
            partitions=PARTITIONS,
            checkpoint_every=0,
        )
        status = client.wait(client.submit(config), timeout=600)
        after = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        client.close()
    seconds = summary(status)["round_seconds"]
    roles = {"master": "master", "coordinator": "coordinator"}
    cpu: dict[str, float] = {}
    for name in pids:
        role = roles.get(name, "worker" if "-w" in name else "edge")
        cpu[role] = cpu.get(role, 0.0) + 1e3 * (after[name] - before[name]) / rounds
    cpu["all"] = sum(v for k, v in cpu.items())
    return float(np.mean(seconds[len(seconds) // 2 :])), cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--rounds", type=int, default=200, help="rounds per job (default 200)")
    parser.add_argument(
        "--straggler", default="none", help="the bench's straggler model (default none)"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.rounds < 20:
        parser.error("--pairs must be >= 1 and --rounds >= 20")
    setup = default_setup(
        straggler=args.straggler, slow_link_seconds=0.0, compute_seconds=COMPUTE_SECONDS
    )
    print("| pair | way | round ms | CPU ms/round: master | edges | workers | coordinator | all |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, cpu_ratios = [], []
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        results = {}
        for streams in order:
            results[streams] = run(replace(setup, streams=streams), args.rounds)
            seconds, cpu = results[streams]
            print(
                f"| {pair + 1} | {'streams' if streams else 'calls'} | {1e3 * seconds:.2f} | "
                f"{cpu['master']:.2f} | {cpu['edge']:.2f} | {cpu['worker']:.2f} | "
                f"{cpu['coordinator']:.2f} | {cpu['all']:.2f} |"
            )
        ratios.append(results[True][0] / results[False][0])
        cpu_ratios.append(results[True][1]["all"] / results[False][1]["all"])
    print(f"round time, streams / calls: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"CPU per round, streams / calls: {', '.join(f'{r:.3f}' for r in cpu_ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
