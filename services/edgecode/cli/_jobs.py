"""What ``edgecode run`` and ``edgecode train`` share: checking a job spec before it is sent,
following a job with a progress bar, the time to a target loss, and the results tables.

Times a result row reports (``summary`` in :mod:`edgecode.master.client`, plus the fields
:func:`add_targets` adds):

- ``mean_round_seconds`` / ``median_round_seconds``: over every round's fan-out-to-decode time;
- ``setup_seconds``: the master's load, plan and first placement, before round 1;
- ``placement_seconds``: every placement (the first, re-placements for a new plan, which run
  beside the rounds, and recoveries, which stall them);
- ``end_to_end_seconds``: from just before the submit call to the final status, as this client
  sees it;
- ``time_to_target_seconds``: ``setup_seconds`` plus the master's wall time (counted from the
  end of setup) of the first round whose training loss is <= ``target_loss``; None if no round
  got there. ``target_loss`` is the reference scheme's final loss + :data:`TARGET_TOLERANCE`,
  the reference being uncoded when it ran and succeeded, else the lowest final loss.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecode.cli._errors import UsageError
from edgecode.cli._render import console, table

if TYPE_CHECKING:
    from edgecode.master.client import MasterClient
    from edgecode.records import JobConfig

#: The main job's schemes (edgecode.planning.plans.SCHEMES; a unit test keeps the two equal).
GRADIENT_SCHEMES = ("hgc", "flat", "uncoded", "ignore")
#: Every training scheme (edgecode.records.JOB_SCHEMES; a unit test keeps the two equal).
JOB_SCHEMES = ("hgc", "flat", "uncoded", "ignore", "partial", "approx", "approx-shuffle")


def _optimizer_flags(parser: Any) -> None:
    """--lr and --lr-schedule (the optimizer itself is --optimizer)."""
    from edgecode.cli import _args

    group = parser.add_argument_group("the optimizer's step (with --optimizer)")
    group.add_argument(
        "--lr",
        type=_args.number(low=0.0, high=1e6),
        default=0.0,
        help="learning rate (default 0: the optimizer's own, 1e-3 for adam, 0.25 otherwise)",
    )
    group.add_argument(
        "--lr-schedule",
        type=_args.lr_schedule,
        default="",
        help="constant | step:every=E[,gamma=G] | exponential:gamma=G | cosine:total=T[,floor=F], "
        "each with an optional ,warmup=W (default constant)",
    )


def add_scheme_flags(parser: Any) -> None:
    """The options of paper 3 (partial), paper 2 (approx, approx-shuffle) and verify."""
    from edgecode.cli import _args

    _optimizer_flags(parser)
    group = parser.add_argument_group("partial recovery (--schemes partial)")
    group.add_argument(
        "--alpha",
        type=_args.fraction_open_closed,
        default=1.0,
        help="recover at least this fraction of the partitions each round (0 < alpha <= 1)",
    )
    group.add_argument(
        "--partial-design",
        choices=("auto", "cyclic", "subset"),
        default="auto",
        help="the partial-recovery design (auto: lowest expected round time)",
    )
    group.add_argument(
        "--vectors",
        type=_args.integer(0),
        default=0,
        help="vectors each worker sends (0 = the design's choice)",
    )
    group.add_argument(
        "--partial-scale",
        choices=("rescale", "none", "inverse-probability"),
        default="rescale",
        help="scale the recovered sum by K/|recovered| (default), not at all, or by inverse "
        "inclusion probabilities (unbiased for every design)",
    )
    group = parser.add_argument_group("approximate decoding (--schemes approx,approx-shuffle)")
    group.add_argument(
        "--base-code",
        choices=("frc", "crc"),
        default="crc",
        help="fractional or cyclic repetition (default crc)",
    )
    group.add_argument(
        "--wait",
        type=_args.integer(0),
        default=0,
        help="answers to wait for before decoding what arrived (0 = until the round deadline)",
    )
    group.add_argument(
        "--shuffle-every",
        type=_args.integer(0),
        default=10,
        help="approx-shuffle: rounds between shuffles (default 10)",
    )
    group.add_argument(
        "--shuffle",
        choices=("random", "aware"),
        default="aware",
        help="approx-shuffle: the policy (default aware)",
    )
    group.add_argument(
        "--shuffle-budget",
        type=_args.integer(0),
        default=0,
        help="approx-shuffle: most bytes one shuffle may move (0 = no limit)",
    )
    _verify_flags(parser)


def _verify_flags(parser: Any) -> None:
    from edgecode.cli import _args

    group = parser.add_argument_group("lying workers (hgc, flat)")
    group.add_argument(
        "--verify",
        action="store_true",
        help="check every decoding against a spare answer; quarantine a node caught lying",
    )
    group.add_argument(
        "--verify-slack",
        type=_args.seconds,
        default=0.01,
        help="seconds to wait for a spare answer once a round is decodable (default 0.01; "
        "longer catches more lies on an uneven fleet and costs up to that much per round)",
    )
    group.add_argument(
        "--quarantine-after",
        type=_args.integer(1),
        default=3,
        help="catches before a node is quarantined (default 3)",
    )


def scheme_options(args: Any) -> dict[str, Any]:
    """The JobConfig fields of :func:`add_scheme_flags`."""
    return {
        "learning_rate": args.lr,
        "lr_schedule": args.lr_schedule,
        "alpha": args.alpha,
        "partial_design": args.partial_design,
        "vectors": args.vectors,
        "partial_scale": args.partial_scale,
        "base_code": args.base_code,
        "wait": args.wait,
        "shuffle_every": args.shuffle_every,
        "shuffle": args.shuffle,
        "shuffle_budget": args.shuffle_budget,
        "verify": args.verify,
        "verify_slack_seconds": args.verify_slack,
        "quarantine_after": args.quarantine_after,
    }


#: The target loss is the reference's final loss plus this (absolute, mean loss per row).
TARGET_TOLERANCE = 1e-4


def check_job(config: JobConfig, remote: bool = False) -> None:
    """Refuse a job the master would refuse, before anything starts.

    With ``remote`` the master runs elsewhere: a data file or a torch model that is not on this
    machine is left for the master to check (it answers INVALID_ARGUMENT, one line)."""
    from edgecode.learning.datasets import check_dataset_spec
    from edgecode.learning.references import TORCH_PREFIX

    checked = config
    if remote:
        try:
            check_dataset_spec(config.dataset)
        except FileNotFoundError:
            checked = dataclasses.replace(checked, dataset="breast_cancer")
        except ValueError:
            pass  # validate() below names it
        if config.model.startswith(TORCH_PREFIX):
            from edgecode.learning.references import parse_model_reference

            try:
                parse_model_reference(config.model)
            except ValueError as exc:
                raise UsageError(f"job spec: model: {exc}") from None
            checked = dataclasses.replace(checked, model="")
    try:
        checked.validate()
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"job spec: {exc}") from None


@dataclass
class Followed:
    """A finished job as the client saw it."""

    status: Any  # master_pb2.JobStatus, with parameters
    latencies: dict[str, list[float]]
    end_to_end_seconds: float


def submit_and_follow(
    client: MasterClient, config: JobConfig, label: str, announce: bool = False
) -> Followed:
    """Submit a job and follow it to its end with a progress bar showing the loss and the MEAN
    round time so far (the tables show the same mean); collect per-worker response latencies."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecode.master.client import FINAL_STATES

    latencies: dict[str, list[float]] = defaultdict(list)
    seen_round = 0
    started = time.perf_counter()
    job_id = client.submit(config)
    if announce:
        console().print(f"submitted {job_id}")
    ended = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console(),
        transient=False,
    ) as bar:
        task = bar.add_task(f"{label:>8}", total=config.rounds, info="setting up")
        for status in client.watch(job_id):
            if status.round > seen_round:
                seen_round = status.round
                for t in status.last_timings:
                    latencies[t.node].append(t.seconds)
                info = ""
                if status.history:
                    mean = sum(r.seconds for r in status.history) / len(status.history)
                    info = f"loss {status.history[-1].loss:.4f}  mean {mean * 1e3:.1f} ms/round"
                bar.update(task, completed=status.round, info=info)
            if status.state in FINAL_STATES:
                ended = time.perf_counter()
                break
    final = client.status(job_id, include_params=True)
    if ended is None:  # the stream closed before a final state: count until this answer
        ended = time.perf_counter()
    return Followed(final, dict(latencies), ended - started)


def time_to_loss(row: dict[str, Any], target: float) -> float | None:
    """Seconds from the job's start on the master to the end of the first round whose loss is
    <= ``target``: ``setup_seconds`` + that round's ``wall_seconds``; None if none is.

    >>> time_to_loss({"loss": [0.5, 0.2, 0.1], "wall_seconds": [1.0, 2.0, 3.0],
    ...               "setup_seconds": 0.5}, 0.2)
    2.5
    """
    for loss, wall in zip(row["loss"], row["wall_seconds"], strict=True):
        if loss <= target:
            return float(row["setup_seconds"] + wall)
    return None


def add_targets(rows: Sequence[dict[str, Any]], tolerance: float = TARGET_TOLERANCE) -> str:
    """Set ``target_loss`` and ``time_to_target_seconds`` on every row (see the module
    docstring); returns the reference scheme's name ("" when no row has a finite loss)."""
    finished = [r for r in rows if r["loss"] and math.isfinite(r["loss"][-1])]
    reference = next(
        (r for r in finished if r["scheme"] == "uncoded" and r["state"] == "succeeded"), None
    )
    if reference is None and finished:
        reference = min(finished, key=lambda r: r["loss"][-1])
    target = reference["loss"][-1] + tolerance if reference else None
    for row in rows:
        row["target_loss"] = target
        row["time_to_target_seconds"] = None if target is None else time_to_loss(row, target)
    return str(reference["scheme"]) if reference else ""


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.1f}" if seconds and math.isfinite(seconds) else "-"


def _s(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else f"{seconds:.{digits}f}"


def report(rows: Sequence[dict[str, Any]], reference: str = "", out: Any = None) -> None:
    """Two tables that fit 100 columns: round times, then wall times and the model's quality."""
    baseline = next((r for r in rows if r["scheme"] == "uncoded" and r["rounds"]), None)
    n_rounds = max((r["rounds"] for r in rows), default=0)
    table(
        f"Round time (ms; mean and median over {n_rounds} rounds; same cluster, data and seed)",
        ["scheme", "state", "rounds", "mean", "median", "predicted", "vs uncoded", "stragglers"],
        [
            [
                r["scheme"],
                r["state"],
                r["rounds"],
                _ms(r["mean_round_seconds"]),
                _ms(r["median_round_seconds"]),
                _ms(r["predicted_round_seconds"]),
                f"{baseline['mean_round_seconds'] / r['mean_round_seconds']:.2f}x"
                if baseline and r["rounds"]
                else "-",
                f"{sum(r['stragglers']) / len(r['stragglers']):.2f}" if r["stragglers"] else "-",
            ]
            for r in rows
        ],
        out=out,
        caption="vs uncoded: uncoded's mean / this mean; stragglers: mean per round",
    )
    target = rows[0].get("target_loss") if rows else None
    table(
        "Wall time (s) and the model",
        ["scheme", "setup", "placement", "end-to-end", "to target", "final loss", "accuracy"],
        [
            [
                r["scheme"],
                _s(r["setup_seconds"]),
                _s(r["placement_seconds"]),
                _s(r.get("end_to_end_seconds")),
                _s(r.get("time_to_target_seconds")),
                f"{r['loss'][-1]:.6f}" if r["loss"] else "-",
                _s(r["accuracy"], 3),
            ]
            for r in rows
        ],
        out=out,
        caption=(
            "setup: load, plan, first placement; placement: all placements; end-to-end: submit "
            "to final status; to target: setup + rounds until the training loss <= "
            + (
                f"{target:.6g} ({reference}'s final loss + {TARGET_TOLERANCE:g})"
                if target is not None
                else "a target (none: no finite loss)"
            )
        ),
    )
