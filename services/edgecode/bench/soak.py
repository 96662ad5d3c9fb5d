"""``edgecode bench soak``: back-to-back jobs with random faults for a long time; memory stays flat.

A local cluster (2 edges x 4 workers, mutual TLS) runs jobs one after the other (the schemes
taking turns, 30 rounds each, a fresh job id every time) while a fault is injected into most
jobs at a random moment: a worker paused for 1-3 s (a straggler beyond the deadline's patience),
a worker killed and started again, an edge killed and started again, or the master killed and
started again (the job resumes from its checkpoint). After every job the resident memory
(VmRSS) of every process is sampled.

The measure: for each process that lived through the whole soak (never restarted), its RSS
growth from the end of the warm-up (the first ``warmup`` fraction of the time) to the end,
relative to the warm-up value. The issue's target is < 5 % for every service. Jobs that fail
are counted with their messages (a fault beyond tolerance may legitimately fail a job; the next
job must still succeed).

Not part of CI (an hour by default); run ``edgecode bench soak --minutes 60``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.master.client import state_name
from edgecode.records import JobConfig

SCHEMES = ("hgc", "flat", "uncoded", "ignore")
FAULTS = ("none", "pause-worker", "restart-worker", "restart-edge", "restart-master")
#: Probabilities of the faults above, per job.
FAULT_WEIGHTS = (0.2, 0.35, 0.25, 0.1, 0.1)
ROUNDS = 30


def _inject(
    cluster: LocalCluster, fault: str, rng: np.random.Generator, restarted: set[str]
) -> str:
    """Inject one fault now; returns the name of the node it hit ("" for none)."""
    workers = [n for n, p in cluster.processes.items() if p.role == "worker"]
    edges = [n for n, p in cluster.processes.items() if p.role == "aggregator"]
    if fault == "pause-worker":
        name = str(rng.choice(workers))
        cluster.pause(name)
        time.sleep(float(rng.uniform(1.0, 3.0)))
        cluster.resume(name)
        return name
    if fault in ("restart-worker", "restart-edge"):
        name = str(rng.choice(workers if fault == "restart-worker" else edges))
        cluster.restart(name)
        restarted.add(name)
        return name
    if fault == "restart-master":
        cluster.restart("master")
        restarted.add("master")
        return "master"
    return ""


def _wait(client: Any, job_id: str, timeout: float = 600.0) -> Any:
    """The job's final status; a restarted master needs a moment to load its jobs again."""
    import grpc

    deadline = time.monotonic() + 30.0
    while True:
        try:
            client.status(job_id)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return client.wait(job_id, timeout=timeout)


def soak(
    minutes: float = 60.0,
    seed: int = 0,
    warmup: float = 0.1,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Run the soak; the report (jobs, RSS samples, growth per long-lived process)."""
    if not minutes > 0 or not 0 <= warmup < 1:
        raise ValueError(f"minutes must be > 0 and 0 <= warmup < 1, got {minutes}, {warmup}")
    rng = np.random.default_rng(seed)
    setup = default_setup(straggler="bernoulli:p=0.2,factor=4", compute_seconds=0.08, seed=seed)
    started = time.monotonic()
    end = started + 60.0 * minutes
    jobs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    restarted: set[str] = set()
    with LocalCluster(setup, workdir) as cluster:
        index = 0
        while time.monotonic() < end:
            scheme = SCHEMES[index % len(SCHEMES)]
            fault = str(rng.choice(FAULTS, p=FAULT_WEIGHTS))
            config = JobConfig(
                scheme=scheme,
                job_id=f"soak-{index}",
                rounds=ROUNDS,
                seed=index,
                s_edge=-1 if scheme == "hgc" else 1,
                s_flat=1,
                checkpoint_every=5,
                round_deadline_seconds=10.0,
            )
            job_started = time.monotonic()
            client = cluster.client()
            try:
                client.submit(config)
                time.sleep(float(rng.uniform(0.0, 1.0)))  # a random moment of the job
                hit = _inject(cluster, fault, rng, restarted)
                client.close()
                client = cluster.client()  # the master may have a new address
                status = _wait(client, config.job_id)
                state, message = state_name(status), status.message
            except Exception as exc:
                state, message, hit = "error", f"{type(exc).__name__}: {exc}", ""
            finally:
                client.close()
            jobs.append(
                {
                    "job": index,
                    "scheme": scheme,
                    "fault": fault,
                    "node": hit,
                    "state": state,
                    "message": message[:300],
                    "seconds": time.monotonic() - job_started,
                }
            )
            samples.append(
                {"t": time.monotonic() - started, "rss_mb": cluster.rss_mb(), "job": index}
            )
            progress(
                f"job {index} ({scheme}, {fault} {hit}): {state}; "
                f"{(end - time.monotonic()) / 60:.1f} min left"
            )
            index += 1
    return {
        "settings": {"minutes": minutes, "seed": seed, "warmup": warmup, "rounds": ROUNDS},
        "jobs": jobs,
        "samples": samples,
        "growth": growth(samples, restarted, warmup * 60.0 * minutes),
        "restarted": sorted(restarted),
    }


def growth(
    samples: list[dict[str, Any]], restarted: set[str], warmup_seconds: float
) -> dict[str, dict[str, float]]:
    """Per process never restarted: RSS at the end of the warm-up, at the end, and the growth
    ``(end - warm) / warm``.

    >>> growth([{"t": 1.0, "rss_mb": {"a": 100.0}}, {"t": 9.0, "rss_mb": {"a": 103.0}}], set(), 0.5)
    {'a': {'warm_mb': 100.0, 'end_mb': 103.0, 'growth': 0.03}}
    """
    after = [s for s in samples if s["t"] >= warmup_seconds]
    if len(after) < 2:
        return {}
    first, last = after[0]["rss_mb"], after[-1]["rss_mb"]
    out = {}
    for name in sorted(set(first) & set(last) - restarted):
        warm, end = float(first[name]), float(last[name])
        out[name] = {
            "warm_mb": warm,
            "end_mb": end,
            "growth": round((end - warm) / warm, 6) if warm > 0 else math.nan,
        }
    return out


def write_outputs(report: dict[str, Any], out: Path) -> list[Path]:
    """soak.json and soak.png (RSS of every process over time, faults marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=float))
    fig, ax = plt.subplots(figsize=(10, 5))
    names = sorted({n for s in report["samples"] for n in s["rss_mb"]})
    for name in names:
        points = [
            (s["t"] / 60, s["rss_mb"][name]) for s in report["samples"] if name in s["rss_mb"]
        ]
        ax.plot(*zip(*points, strict=True), label=name, linewidth=0.9)
    ax.set(xlabel="minutes", ylabel="RSS (MB)", title="edgecode soak: memory of every process")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=110)
    plt.close(fig)
    return [out / "soak.json", out / "soak.png"]
