"""``edgecode codes``: inspect and verify the coding core."""

from __future__ import annotations

import argparse
import json
from functools import partial

from edgecode.cli import _args, command_help
from edgecode.cli._render import console, print_help, progress, table


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "codes"
) -> None:
    parser = subparsers.add_parser(
        "codes",
        help=command_help("codes"),
        description=(
            "Inspect a code's coefficients and load, or verify that every code decodes the exact "
            "result from every straggler pattern it claims to tolerate."
        ),
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="decode every tolerated straggler pattern (sampled when too many) and report errors",
        description=(
            "For each code and size: enumerate every alive set the code claims to tolerate "
            "(2,000 sampled sets above 20,000), decode random float64 gradients, and report the "
            "worst relative error, the worst condition number, and the load beside its bound. "
            "Exit code 1 if any pattern fails to decode."
        ),
    )
    verify.add_argument(
        "--max-n",
        type=_args.integer(8),
        default=64,
        help="largest flat code size, at least 8 (default 64; sizes 8, 16, 32, 64)",
    )
    verify.add_argument("--seed", type=_args.seed, default=0, help="seed of the random gradients")
    verify.add_argument(
        "--json", metavar="FILE", type=_args.output_file, help="also write the report as JSON"
    )
    verify.set_defaults(func=_verify)

    show = actions.add_parser("show", help="print one code's coefficient matrix B and its load")
    show.add_argument("kind", choices=["cyclic", "fractional", "hierarchical"])
    show.add_argument("-n", type=_args.integer(1), default=6, help="workers (flat codes)")
    show.add_argument(
        "-s", type=_args.integer(0), default=1, help="stragglers tolerated (flat codes)"
    )
    show.add_argument(
        "--workers-per-edge",
        type=_args.integer_list(1),
        default="3,3",
        help="m_i list (hierarchical), e.g. 3,3",
    )
    show.add_argument("--s-edge", type=_args.integer(0), default=1)
    show.add_argument("--s-worker", type=_args.integer(0), default=1)
    show.set_defaults(func=_show)
    parser.set_defaults(func=partial(print_help, parser))


def _verify(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes.verify import default_suite

    rng = np.random.default_rng(args.seed)
    suite = default_suite(args.max_n)
    results = [check(rng) for _, check in progress(suite, "verifying codes")]
    table(
        "Decoding every tolerated straggler pattern",
        [
            "code",
            "parameters",
            "patterns",
            "all",
            "decoded",
            "worst rel. error",
            "worst cond.",
            "load",
            "bound",
            "note",
        ],
        [
            [
                r.code,
                r.parameters,
                r.patterns,
                "all" if r.exhaustive else "sampled",
                r.ok,
                r.worst_relative_error,
                r.worst_condition,
                r.load,
                r.load_bound,
                r.note,
            ]
            for r in results
        ],
    )
    failed = [r for r in results if not r.ok]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w") as handle:
            json.dump([r.__dict__ for r in results], handle, indent=2)
    console().print(
        f"{len(results) - len(failed)} of {len(results)} codes decode every pattern checked"
        + (
            ""
            if not failed
            else f"; FAILED: {', '.join(r.code + ' ' + r.parameters for r in failed)}"
        )
    )
    return 1 if failed else 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes import cyclic_repetition, fractional_repetition, hierarchical

    np.set_printoptions(precision=3, suppress=True, linewidth=160)
    if args.kind == "hierarchical":
        m = args.workers_per_edge
        _args.check(
            args.s_edge < len(m),
            f"--s-edge must be < the {len(m)} edges of --workers-per-edge, got {args.s_edge}",
        )
        _args.check(
            args.s_worker < min(m),
            f"--s-worker must be < the smallest edge of --workers-per-edge ({min(m)}), "
            f"got {args.s_worker}",
        )
        code = hierarchical(m, args.s_edge, args.s_worker)
        console().print(
            f"hierarchical m={m} s_e={args.s_edge} s_w={args.s_worker} K={code.n_partitions}"
        )
        console().print(f"load D/K = {code.load:.4f}, bound = {code.load_bound:.4f}")
        print(code.B)
        return 0
    code_f = (
        cyclic_repetition(args.n, args.s)
        if args.kind == "cyclic"
        else fractional_repetition(args.n, args.s)
    )
    console().print(
        f"{code_f.name} n={args.n} s={args.s}: "
        f"load {code_f.load:.4f} (bound {code_f.load_bound:.4f})"
    )
    print(code_f.B)
    return 0
