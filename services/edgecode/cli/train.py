"""``edgecode train``: submit a job to a running master and follow it.

The job spec is checked here first (everything that does not depend on the master's machine);
an unreachable master or one that refuses the job is a one-line error naming its address.
"""

from __future__ import annotations

import argparse
import re

from edgecode.cli import _args, command_help
from edgecode.cli._errors import remote
from edgecode.cli._jobs import (
    JOB_SCHEMES,
    add_scheme_flags,
    add_targets,
    check_job,
    report,
    scheme_options,
    submit_and_follow,
)
from edgecode.cli._render import console

#: edgecode.records.JOB_ID (a unit test keeps the two equal).
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def job_id(text: str) -> str:
    if text and not JOB_ID.match(text):
        raise argparse.ArgumentTypeError(f"expected 1-64 letters, digits, - or _, got {text!r}")
    return text


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "train"
) -> None:
    train = subparsers.add_parser(
        "train",
        help=command_help("train"),
        description=(
            "Submit a job to a master (for example one started by docker compose) and follow it. "
            "A data file or torch model is read by the master, on its machine."
        ),
    )
    train.add_argument(
        "--master", required=True, type=_args.address, help="master address HOST:PORT"
    )
    train.add_argument("--scheme", default="hgc", choices=JOB_SCHEMES)
    train.add_argument("--rounds", type=_args.integer(1, 1_000_000), default=60)
    train.add_argument(
        "--dataset",
        type=_args.dataset_syntax,
        default="breast_cancer",
        help="bundled name, synthetic-...:k=v spec or a file on the master's machine",
    )
    train.add_argument(
        "--model",
        type=_args.model_syntax,
        default="",
        help="logistic, softmax, least_squares or torch:MODULE:FUNCTION (default: from the data)",
    )
    train.add_argument(
        "--optimizer",
        type=_args.optimizer,
        default="nesterov",
        help="gd, nesterov, sgd or adam, with options NAME:KEY=VALUE,... (default nesterov)",
    )
    train.add_argument(
        "--s-edge", type=_args.integer(-1), default=-1, help="edge stragglers (-1 = planner)"
    )
    train.add_argument("--s-worker", type=_args.integer(0), default=1)
    train.add_argument("--s-flat", type=_args.integer(0), default=1)
    train.add_argument("--seed", type=_args.seed, default=0)
    train.add_argument("--deadline", type=_args.deadline, default=30.0)
    train.add_argument("--checkpoint-every", type=_args.integer(0), default=10)
    train.add_argument("--job-id", type=job_id, default="")
    train.add_argument("--json", metavar="FILE", type=_args.output_file)
    add_scheme_flags(train)
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from edgecode.cli.run import write_json
    from edgecode.master.client import MasterClient, summary
    from edgecode.records import JobConfig

    config = JobConfig(
        scheme=args.scheme,
        dataset=args.dataset,
        model=args.model,
        rounds=args.rounds,
        optimizer=args.optimizer,
        s_edge=args.s_edge,
        s_worker=args.s_worker,
        s_flat=args.s_flat,
        seed=args.seed,
        round_deadline_seconds=args.deadline,
        checkpoint_every=args.checkpoint_every,
        job_id=args.job_id,
        **scheme_options(args),
    )
    check_job(config, remote=True)
    client = MasterClient(args.master)
    try:
        with remote(args.master, "the master"):
            followed = submit_and_follow(client, config, args.scheme, announce=True)
    finally:
        client.close()
    result = summary(followed.status, followed.end_to_end_seconds)
    reference = add_targets([result])
    report([result], reference)
    if args.json:
        write_json(args.json, result)
    if result["state"] != "succeeded":
        console().print(f"[red]job {result['job_id']} {result['state']}: {result['message']}[/red]")
        return 1
    return 0
