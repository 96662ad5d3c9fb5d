"""``edgecode bench goco``: GOCO (d = 3) against uncoded gossip and gossip-wait, side by side.

Two sources, labelled in every row:

- **simulator** (the full table): 12 peers, ring and torus, non-iid least squares (1,200 rows,
  10 features), p in {0.1, 0.3, 0.5}, R rounds, every scheme on the same data, graph and straggler
  patterns, each with its best step; gap after R rounds and rounds / emulated seconds to the
  target gap (:func:`edgecode.sim.goco.goco_comparison`; the peers follow the simulator exactly,
  tested in ``tests/unit/test_peer_logic.py``);
- **real processes** (a short check): a coordinator and 12 ``edgecode peer`` processes on
  loopback, the ring at p = 0.3, the same data, each scheme with the simulator's chosen step,
  emulated compute ``unit_seconds`` per partition (5x for a Bernoulli(p) straggler): gap after
  the rounds run and measured wall seconds.

Targets (checked on the simulated table, where every cell is averaged over the repeats): goco's
gap <= gossip's at p >= 0.3 after the same rounds; goco reaches the target gap in less (emulated)
wall time than gossip-wait at p >= 0.3.

:func:`run_gossip_scheme` runs one scheme on a running coordinator and returns its JSON row
(``loss``, ``gap``, ``consensus_distance``, ``skipped_gradients`` per round, ...): the one call
``edgecode run --schemes goco,gossip,gossip-wait`` needs.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.gossip_records import GossipJobSpec, records_as_row

N_PEERS = 12
REPLICATION = 3
GRAPHS = ("ring", "torus")
PROBABILITIES = (0.1, 0.3, 0.5)
SCHEMES = ("goco", "gossip", "gossip-wait")
N_ROWS, N_FEATURES, NOISE = 1200, 10, 1.0
#: The real run's emulated compute: seconds per partition, straggler factor, deadline factor.
UNIT_SECONDS = 0.01
SLOW_FACTOR = 5.0
DEADLINE_FACTOR = 1.5
DECAY_ROUNDS = 50.0


def dataset_spec(seed: int) -> str:
    """The synthetic data set of the comparison (the simulator draws the same one)."""
    return f"synthetic-lsq:n={N_ROWS},d={N_FEATURES},noise={NOISE:g},seed={seed}"


def run_gossip_scheme(
    coordinator: str, spec: GossipJobSpec, timeout: float = 600.0
) -> dict[str, Any]:
    """Run ``spec`` on the peers of the coordinator at ``coordinator`` and return its JSON row
    (:func:`edgecode.gossip_records.records_as_row`) plus ``wall_seconds_total`` (the slowest
    peer's seconds for every round) and ``seconds_per_round``."""
    from edgecode.coordinator.client import GossipClient

    client = GossipClient(coordinator)
    try:
        client.start(spec)
        status = client.wait(spec.job_id, timeout=timeout)
    finally:
        client.close()
    row = records_as_row(status)
    walls = [w for w in row["wall_seconds"] if w is not None]
    row["wall_seconds_total"] = max(walls) if walls else None
    row["seconds_per_round"] = max(walls) / len(walls) if walls else None
    return row


def gossip_spec(
    scheme: str,
    *,
    graph: str = "ring",
    p: float = 0.3,
    rounds: int = 60,
    lr: float = 0.1,
    seed: int = 0,
    job_id: str = "",
    straggle: bool = True,
) -> GossipJobSpec:
    """The benchmark's job for one scheme: non-iid, d = 3 for goco, emulated Bernoulli(p)
    stragglers ``SLOW_FACTOR`` times slower, deadline ``DEADLINE_FACTOR`` x the nominal time."""
    return GossipJobSpec(
        job_id=job_id or f"bench-{scheme}-{graph.split(':')[0]}-{int(p * 100)}",
        graph=graph,
        peers=N_PEERS,
        scheme=scheme,
        replication=REPLICATION,
        straggle_probability=p,
        dataset=dataset_spec(seed),
        non_iid=True,
        rounds=rounds,
        learning_rate=lr,
        decay_rounds=DECAY_ROUNDS,
        partition_deadline_seconds=DEADLINE_FACTOR * UNIT_SECONDS,
        gossip_deadline_seconds=1.0,
        report_params_every=1,
        seed=seed,
        straggle=f"bernoulli:p={p:g},factor={SLOW_FACTOR:g}" if straggle else "",
        compute_seconds=UNIT_SECONDS * N_PEERS,
    )


def simulated_rows(rounds: int, repeats: int, target_gap: float, seed: int) -> list[dict[str, Any]]:
    from edgecode.sim.goco import TimeModel, goco_comparison

    rows = goco_comparison(
        np.random.default_rng(seed),
        graphs=GRAPHS,
        probabilities=PROBABILITIES,
        schemes=SCHEMES,
        n_peers=N_PEERS,
        rounds=rounds,
        target_gap=target_gap,
        replication=REPLICATION,
        non_iid=True,
        repeats=repeats,
        decay_rounds=DECAY_ROUNDS,
        n_rows=N_ROWS,
        n_features=N_FEATURES,
        noise=NOISE,
        time=TimeModel(unit_seconds=1.0, slow_factor=SLOW_FACTOR, gossip_seconds=0.1),
    )
    return [
        {
            "source": "simulator",
            "graph": row.graph,
            "p": row.p,
            "scheme": row.scheme,
            "d": row.replication,
            "lr": row.lr,
            "rounds": row.rounds,
            "gap": row.gap,
            "gap_stderr": row.gap_stderr,
            "consensus": row.consensus,
            "rounds_to_target": row.rounds_to_target,
            "wall_to_target": row.wall_to_target,
            "wall_unit": "emulated units (1 = one partition's gradient)",
        }
        for row in rows
    ]


def real_rows(
    simulated: Sequence[dict[str, Any]],
    real_rounds: int,
    target_gap: float,
    seed: int,
    workdir: Path | None,
    progress: Callable[[str], None] = lambda text: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ring at p = 0.3 on real processes, each scheme with the simulator's step."""
    from edgecode.cluster.local import LocalGossipCluster, gossip_peers

    p, graph = 0.3, "ring"
    chosen = {r["scheme"]: r["lr"] for r in simulated if r["graph"] == graph and r["p"] == p}
    rows, curves = [], {}
    progress(f"starting a coordinator and {N_PEERS} peer processes ...")
    with LocalGossipCluster(gossip_peers(N_PEERS, seed=seed), workdir=workdir) as cluster:
        for scheme in SCHEMES:
            progress(f"real processes: {scheme}, {real_rounds} rounds ...")
            spec = gossip_spec(
                scheme, graph=graph, p=p, rounds=real_rounds, lr=chosen.get(scheme, 0.1), seed=seed
            )
            started = time.monotonic()
            row = run_gossip_scheme(cluster.coordinator_address, spec)
            curves[scheme] = row
            gaps = [g for g in row["gap"] if g is not None]
            reach = _first_stay_below(row["gap"], target_gap)
            rows.append(
                {
                    "source": "real processes",
                    "graph": row["graph"],
                    "p": p,
                    "scheme": scheme,
                    "d": row["replication"],
                    "lr": spec.learning_rate,
                    "rounds": len(row["rounds"]),
                    "gap": gaps[-1] if gaps else math.nan,
                    "gap_stderr": math.nan,
                    "consensus": _last(row["consensus_distance"]),
                    "rounds_to_target": reach,
                    "wall_to_target": None if reach is None else row["wall_seconds"][reach - 1],
                    "wall_unit": "measured seconds",
                    "state": row["state"],
                    "skipped_gradients": sum(row["skipped_gradients"]),
                    "wall_seconds_total": row["wall_seconds_total"],
                    "job_seconds": time.monotonic() - started,
                }
            )
    return rows, curves


def _first_stay_below(gaps: Sequence[float | None], target: float) -> int | None:
    """Rounds until the gap stays <= target to the end (None: never)."""
    above = [i for i, g in enumerate(gaps) if g is None or not g <= target]
    if not gaps:
        return None
    first = (above[-1] + 1) if above else 0
    return first + 1 if first < len(gaps) else None


def _last(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None]
    return finite[-1] if finite else math.nan


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two targets on every simulated (graph, p >= 0.3) cell."""
    out = []
    cells = {(r["graph"], r["p"]) for r in rows if r["source"] == "simulator" and r["p"] >= 0.3}
    for graph, p in sorted(cells):
        cell = {
            r["scheme"]: r
            for r in rows
            if r["source"] == "simulator" and (r["graph"], r["p"]) == (graph, p)
        }
        goco, gossip, wait = cell["goco"], cell["gossip"], cell["gossip-wait"]
        out.append(
            {
                "target": f"{graph}, p={p:g}: goco gap <= gossip gap after {goco['rounds']} rounds",
                "measured": f"{goco['gap']:.3g} vs {gossip['gap']:.3g}",
                "met": bool(goco["gap"] <= gossip["gap"]),
            }
        )
        faster = goco["wall_to_target"] is not None and (
            wait["wall_to_target"] is None or goco["wall_to_target"] < wait["wall_to_target"]
        )
        out.append(
            {
                "target": f"{graph}, p={p:g}: goco reaches the target gap sooner than gossip-wait",
                "measured": f"{_num(goco['wall_to_target'])} vs {_num(wait['wall_to_target'])} "
                "(emulated units)",
                "met": bool(faster),
            }
        )
    return out


def _num(value: float | None) -> str:
    return "never" if value is None else f"{value:.4g}"


def bench_goco(
    *,
    rounds: int = 300,
    repeats: int = 5,
    target_gap: float = 1e-3,
    real_rounds: int = 60,
    real_target_gap: float = 0.05,
    seed: int = 0,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """The whole benchmark: the simulated table, the real-process check, the targets."""
    if rounds < 1 or repeats < 1 or real_rounds < 0:
        raise ValueError("rounds and repeats must be >= 1, real_rounds >= 0")
    progress(f"simulator: 2 graphs x 3 p x 3 schemes x {repeats} patterns, {rounds} rounds ...")
    started = time.monotonic()
    rows = simulated_rows(rounds, repeats, target_gap, seed)
    simulated_seconds = time.monotonic() - started
    curves: dict[str, Any] = {}
    if real_rounds:
        real, curves = real_rows(rows, real_rounds, real_target_gap, seed, workdir, progress)
        rows += real
    return {
        "note": (
            "rows with source 'simulator' are the full table (means over the straggler patterns; "
            "wall time in emulated units); rows with source 'real processes' are one short run of "
            f"a coordinator and {N_PEERS} peer processes (ring, p = 0.3, {real_rounds} rounds, "
            f"target gap {real_target_gap:g}; wall time in measured seconds)"
        ),
        "settings": {
            "peers": N_PEERS,
            "replication": REPLICATION,
            "rounds": rounds,
            "repeats": repeats,
            "target_gap": target_gap,
            "real_rounds": real_rounds,
            "real_target_gap": real_target_gap,
            "unit_seconds": UNIT_SECONDS,
            "slow_factor": SLOW_FACTOR,
            "seed": seed,
            "simulator_seconds": simulated_seconds,
            "real_spec": asdict(
                replace(gossip_spec("goco", rounds=real_rounds, seed=seed), edges=())
            ),
        },
        "rows": rows,
        "targets": targets(rows),
        "real_curves": curves,
    }


def write_outputs(report: dict[str, Any], out: Path) -> list[Path]:
    """goco.json (everything), goco.csv (the rows), goco.png (the table and the real curves)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, png_path = out / "goco.json", out / "goco.csv", out / "goco.png"
    json_path.write_text(json.dumps(report, indent=2, default=_json_default))
    rows = report["rows"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    _plot(report, png_path)
    return [json_path, csv_path, png_path]


def _json_default(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _plot(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    from edgecode.sim.goco import GOSSIP_COLOURS

    simulated = [r for r in report["rows"] if r["source"] == "simulator"]
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    gap_ax, wall_ax, real_ax = fig.subplots(1, 3)
    cells = sorted({(r["graph"], r["p"]) for r in simulated})
    width = 0.27
    for k, scheme in enumerate(SCHEMES):
        mine = {(r["graph"], r["p"]): r for r in simulated if r["scheme"] == scheme}
        xs = np.arange(len(cells)) + (k - 1) * width
        colour = GOSSIP_COLOURS[scheme]
        gap_ax.bar(xs, [mine[c]["gap"] for c in cells], width, label=scheme, color=colour)
        walls = [mine[c]["wall_to_target"] or np.nan for c in cells]
        wall_ax.bar(xs, walls, width, label=scheme, color=colour)
        for x, wall in zip(xs, walls, strict=True):
            if not math.isfinite(wall):
                wall_ax.text(x, 0, "never", rotation=90, ha="center", va="bottom", fontsize=7)
    labels = [f"{g.split(':')[0]}\np={p:g}" for g, p in cells]
    settings = report["settings"]
    gap_ax.set(
        yscale="log",
        xticks=range(len(cells)),
        xticklabels=labels,
        title=f"simulator: gap after {settings['rounds']} rounds",
    )
    wall_ax.set(
        xticks=range(len(cells)),
        xticklabels=labels,
        title=f"simulator: emulated time to gap {settings['target_gap']:g}",
    )
    for scheme, row in report.get("real_curves", {}).items():
        points = [(w, g) for w, g in zip(row["wall_seconds"], row["gap"], strict=True) if g and w]
        if points:
            real_ax.semilogy(*zip(*points, strict=True), label=scheme, color=GOSSIP_COLOURS[scheme])
    real_ax.set(
        xlabel="measured seconds",
        ylabel="relative gap",
        title=f"real processes: ring, p = 0.3, {settings['real_rounds']} rounds",
    )
    for ax in (gap_ax, wall_ax, real_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # the real panel is empty with --real-rounds 0
            ax.legend(fontsize="small")
    fig.suptitle(f"GOCO (d = {REPLICATION}) vs gossip vs gossip-wait, {N_PEERS} peers, non-iid")
    fig.savefig(path, dpi=110)


__all__ = [
    "bench_goco",
    "gossip_spec",
    "real_rows",
    "run_gossip_scheme",
    "simulated_rows",
    "targets",
    "write_outputs",
]
