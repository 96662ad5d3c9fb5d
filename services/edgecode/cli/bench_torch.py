"""``edgecode bench train --model torch:...`` (the run is :mod:`edgecode.bench.torch_train`) and
``edgecode bench soak`` (:mod:`edgecode.bench.soak`): their parsers and reports."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from edgecode.cli._render import console, table


def _s(value: float | None, digits: int = 2) -> str:
    return "never" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def bench_train_torch(args: argparse.Namespace) -> int:
    """Run the torch comparison, print it, write ``torch.json`` and ``torch.png``."""
    from edgecode.bench.torch_train import (
        TARGET_ACCURACY,
        bench_torch_training,
        plot_torch_training,
    )
    from edgecode.cli._jobs import check_job
    from edgecode.records import JobConfig

    check_job(JobConfig(scheme="uncoded", dataset="digits", model=args.model))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console().status("") as status:
        report = bench_torch_training(
            args.model, rounds=args.rounds, progress=lambda text: status.update(text)
        )
    rows = report["rows"]
    uncoded = next(r for r in rows if r["scheme"] == "uncoded")
    table(
        f"{args.model} on digits: 8 workers, one persistent 5x straggler, {args.rounds} rounds",
        [
            "scheme",
            "state",
            "mean ms/round",
            "vs uncoded",
            f"s to {TARGET_ACCURACY:.0%} test acc.",
            "final loss",
            "test accuracy",
        ],
        [
            [
                r["scheme"],
                r["state"],
                f"{r['mean_round_seconds'] * 1e3:.1f}",
                f"{uncoded['mean_round_seconds'] / r['mean_round_seconds']:.2f}x",
                _s(r["time_to_target_seconds"]),
                f"{r['loss'][-1]:.6f}" if r["loss"] else "-",
                f"{r['accuracy']:.3f}",
            ]
            for r in rows
        ],
        caption="vs uncoded: uncoded's mean round time / this one; the time to the target "
        "accuracy counts from the job's start (setup and placement included)",
    )
    console().print(
        f"peak worker memory: {report['max_worker_peak_rss_mb']:.0f} MB "
        f"(max over {len(report['worker_peak_rss_mb'])} workers)"
    )
    (out / "torch.json").write_text(json.dumps(report, indent=2, default=float))
    plot_torch_training(report, out / "torch.png")
    console().print(f"wrote {out / 'torch.json'}, {out / 'torch.png'}")
    return 0 if all(r["state"] == "succeeded" for r in rows) else 1


def soak_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench soak``: its parser."""
    from edgecode.cli import _args

    soak = targets.add_parser(
        "soak",
        help="back-to-back jobs with random faults for an hour; memory of every service",
        description=(
            "A local cluster runs jobs back to back (the schemes taking turns, 30 rounds each) "
            "while most jobs get a random fault: a worker paused 1-3 s, a worker, an edge or the "
            "master killed and started again. After every job the RSS of every process is "
            "sampled; the report gives each long-lived process's growth after the warm-up "
            "(target < 5 %) and every job's outcome. Exit 1 when a job failed or (for a soak of "
            "10 minutes or more) a process grew 5 % or more. Not part of CI."
        ),
    )
    soak.add_argument(
        "--minutes", type=_args.number(above=0.0), default=60.0, help="duration (default 60)"
    )
    soak.add_argument(
        "--warmup",
        type=_args.number(low=0.0, high=0.9),
        default=0.1,
        help="fraction of the time before the memory baseline (default 0.1)",
    )
    soak.add_argument("--seed", type=_args.seed, default=0)
    soak.add_argument(
        "--out", type=_args.output_dir, default="out/soak", help="output folder (default out/soak)"
    )
    soak.set_defaults(func=_soak)


#: The shortest soak whose memory growth is judged against the target.
JUDGED_MINUTES = 10.0


def _soak(args: argparse.Namespace) -> int:
    from edgecode.bench.soak import soak, write_outputs

    with console().status("") as status:
        report = soak(
            args.minutes, args.seed, args.warmup, progress=lambda text: status.update(text)
        )
    jobs = report["jobs"]
    by_fault: dict[str, list[str]] = {}
    for job in jobs:
        by_fault.setdefault(job["fault"], []).append(job["state"])
    table(
        f"{len(jobs)} jobs in {args.minutes:g} minutes",
        ["fault", "jobs", "succeeded", "failed or error"],
        [
            [fault, len(states), states.count("succeeded"), len(states) - states.count("succeeded")]
            for fault, states in sorted(by_fault.items())
        ],
    )
    growth = report["growth"]
    table(
        "RSS growth after the warm-up (processes never restarted; target < 5 %)",
        ["process", "warm MB", "end MB", "growth"],
        [[n, g["warm_mb"], g["end_mb"], f"{100 * g['growth']:.2f} %"] for n, g in growth.items()],
    )
    for job in jobs:
        if job["state"] != "succeeded":
            console().print(f"job {job['job']} ({job['fault']} {job['node']}): {job['message']}")
    paths = write_outputs(report, Path(args.out))
    console().print("wrote " + ", ".join(str(p) for p in paths))
    failed = [job for job in jobs if job["state"] != "succeeded"]
    if args.minutes < JUDGED_MINUTES:
        # the first minutes are the warm-up (imports, arenas, caches): no verdict on memory
        console().print(
            f"memory not judged: a soak shorter than {JUDGED_MINUTES:g} minutes is all warm-up"
        )
        return 1 if failed else 0
    values = [g["growth"] for g in growth.values()]  # every one checked: NaN fails too
    memory_ok = bool(values) and all(math.isfinite(v) and v < 0.05 for v in values)
    return 0 if memory_ok and not failed else 1
