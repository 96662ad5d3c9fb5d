"""``edgecode codes``: inspect and verify the coding core."""

from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np

from edgecode.cli._render import console, print_help, progress, table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "codes",
        help="inspect and verify the gradient and matrix codes",
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
    verify.add_argument("--max-n", type=int, default=64, help="largest flat code size (default 64)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the random gradients")
    verify.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    verify.add_argument(
        "--table",
        action="store_true",
        help=(
            "instead: the exactness table of the cyclic code, worst condition number, residual "
            "and relative error over every alive set for n <= 16 (sampled above), per (n, s)"
        ),
    )
    verify.add_argument(
        "--sizes",
        default="2-16,24,32,48,64",
        help="n values of --table, e.g. 2-16,24,32 (default 2-16,24,32,48,64)",
    )
    verify.set_defaults(func=_verify)

    show = actions.add_parser("show", help="print one code's coefficient matrix B and its load")
    show.add_argument("kind", choices=["cyclic", "fractional", "hierarchical"])
    show.add_argument("-n", type=int, default=6, help="workers (flat codes)")
    show.add_argument("-s", type=int, default=1, help="stragglers tolerated (flat codes)")
    show.add_argument("--workers-per-edge", default="3,3", help="m_i list (hierarchical), e.g. 3,3")
    show.add_argument("--s-edge", type=int, default=1)
    show.add_argument("--s-worker", type=int, default=1)
    show.set_defaults(func=_show)
    parser.set_defaults(func=partial(print_help, parser))


def _sizes(text: str) -> list[int]:
    sizes: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            sizes += list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ValueError(f"--sizes must look like 2-16,24,32, got {text!r}") from None
    return sizes


def _table(args: argparse.Namespace) -> int:
    from edgecode.codes.verify import exactness_cases, exactness_row

    rng = np.random.default_rng(args.seed)
    cases = exactness_cases(_sizes(args.sizes))
    rows = [exactness_row(n, s, rng) for n, s in progress(cases, "decoding every alive set")]
    table(
        "cyclic_repetition(n, s): worst alive set",
        [
            "n",
            "s",
            "alive sets",
            "all",
            "worst cond.",
            "worst |aB - 1|",
            "worst rel. error",
            "build s",
        ],
        [
            [
                r.n,
                r.s,
                r.alive_sets,
                "all" if r.exhaustive else "sampled",
                r.worst_condition,
                r.worst_residual,
                r.worst_relative_error,
                r.build_seconds,
            ]
            for r in rows
        ],
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([r.__dict__ for r in rows], handle, indent=2)
    bad = [r for r in rows if not (r.worst_residual <= 1e-9 and r.worst_relative_error <= 1e-9)]
    console.print(
        f"{len(rows) - len(bad)} of {len(rows)} (n, s) decode every alive set checked to <= 1e-9"
        + ("" if not bad else f"; ABOVE: {[(r.n, r.s) for r in bad]}")
    )
    return 1 if bad else 0


def _verify(args: argparse.Namespace) -> int:
    from edgecode.codes.verify import default_suite

    if args.table:
        return _table(args)
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
        with open(args.json, "w") as handle:
            json.dump([r.__dict__ for r in results], handle, indent=2)
    console.print(
        f"{len(results) - len(failed)} of {len(results)} codes decode every pattern checked"
        + (
            ""
            if not failed
            else f"; FAILED: {', '.join(r.code + ' ' + r.parameters for r in failed)}"
        )
    )
    return 1 if failed else 0


def _show(args: argparse.Namespace) -> int:
    from edgecode.codes import cyclic_repetition, fractional_repetition, hierarchical

    np.set_printoptions(precision=3, suppress=True, linewidth=160)
    if args.kind == "hierarchical":
        m = [int(x) for x in args.workers_per_edge.split(",")]
        code = hierarchical(m, args.s_edge, args.s_worker)
        console.print(
            f"hierarchical m={m} s_e={args.s_edge} s_w={args.s_worker} K={code.n_partitions}"
        )
        console.print(f"load D/K = {code.load:.4f}, bound = {code.load_bound:.4f}")
        print(code.B)
        return 0
    code_f = (
        cyclic_repetition(args.n, args.s)
        if args.kind == "cyclic"
        else fractional_repetition(args.n, args.s)
    )
    console.print(
        f"{code_f.name} n={args.n} s={args.s}: "
        f"load {code_f.load:.4f} (bound {code_f.load_bound:.4f})"
    )
    print(code_f.B)
    return 0
