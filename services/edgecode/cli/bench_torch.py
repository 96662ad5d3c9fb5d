"""``edgecode bench train --model torch:...``: its report (the run is
:mod:`edgecode.bench.torch_train`)."""

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
