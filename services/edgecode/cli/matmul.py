"""``edgecode matmul``: A^T x (or A^T B) with a straggler-resilient coded sparse matrix job."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli import _args, command_help
from edgecode.cli._errors import UsageError, remote
from edgecode.cli._render import console, table
from edgecode.cli._tls import add_client_tls_flags, client_tls
from edgecode.cli.bench import matrix_file

if TYPE_CHECKING:
    import numpy as np

    from edgecode.runtime.security import Tls

#: The matrix schemes (edgecode.records.MATRIX_SCHEMES; a unit test keeps the two equal).
SCHEMES = ("sparse", "dense", "poly", "uncoded")


def operand_file(text: str) -> Path:
    """``--vector`` / ``--rhs``: an existing .npy (or .npz for a sparse B)."""
    path = _args.existing_file(text)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise argparse.ArgumentTypeError(f"expected a .npy or .npz file, got {text!r}")
    return path


def kill_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """``--kill``: comma list of ``iteration:worker`` pairs (iteration >= 1)."""
    pairs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        iteration, _, worker = item.partition(":")
        if not (iteration.isdigit() and worker.isdigit() and int(iteration) >= 1):
            raise argparse.ArgumentTypeError(f"expected ITERATION:WORKER pairs, got {item!r}")
        pairs.append((int(iteration), int(worker)))
    if not pairs:
        raise argparse.ArgumentTypeError("expected ITERATION:WORKER pairs, got nothing")
    return tuple(pairs)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "matmul"
) -> None:
    parser = subparsers.add_parser(
        "matmul",
        help=command_help("matmul"),
        description=(
            "Encode a sparse A into n coded blocks (the weight-optimal sparse code keeps them "
            "sparse), place one on each worker, then compute A^T x (--vector), A^T B (--rhs) or "
            "run the power method on A^T A (--power-iterations) from the first k workers to "
            "answer. With --k-b, a sparse B (.npz, CSR) is coded too (k_b blocks; any k_a k_b "
            "workers decode) and placed once; without it B goes column by column through A's "
            "code. Uses a running master (--master) or starts a local cluster of "
            "--workers worker processes. Prints the weight of the code beside its counting "
            "bound and the relative error against the direct product."
        ),
    )
    _operand_flags(parser)
    _code_flags(parser)
    _run_flags(parser)
    parser.set_defaults(func=_matmul)


def _operand_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--matrix",
        type=matrix_file,
        default="random",
        help="A: a .npz (scipy.sparse.save_npz) or .mtx file, 'random' (seeded 1%%-dense "
        "--size x --size, the default) or 'tfidf' (TF-IDF of scikit-learn's bundled text)",
    )
    parser.add_argument(
        "--size", type=_args.integer(1), default=2000, help="size of 'random' (default 2000)"
    )
    operand = parser.add_mutually_exclusive_group()
    operand.add_argument(
        "--vector", type=operand_file, help="x as .npy (length t); default: seeded random"
    )
    operand.add_argument(
        "--rhs",
        type=operand_file,
        help="B as .npz (sparse) or .npy (dense, t x p): sent column by column through A's "
        "code, or, with --k-b, a sparse CSR B coded and placed once",
    )


def _code_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheme", choices=SCHEMES, default="sparse")
    parser.add_argument("--workers", type=_args.integer(1), default=6, help="n (default 6)")
    parser.add_argument(
        "--k",
        "--k-a",
        dest="k",
        type=_args.integer(1),
        default=4,
        help="k_a: A's block-columns; any k_a (k_a k_b with a coded B) results decode (default 4)",
    )
    parser.add_argument(
        "--k-b",
        dest="k_b",
        type=_args.integer(1),
        default=None,
        help="code a sparse --rhs B.npz too, in k_b block-columns (A^T B with both operands "
        "coded; default: B column by column through A's code)",
    )


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=_args.output_file, default=None, help="write the result here (.npy)"
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=_args.output_file,
        default=None,
        help="write the job (weights, counting bound, bytes, tolerance) and the products as JSON",
    )
    parser.add_argument(
        "--master", type=_args.address, default=None, help="HOST:PORT of a running master"
    )
    add_client_tls_flags(parser)
    parser.add_argument(
        "--power-iterations",
        type=_args.integer(0),
        default=0,
        help="run T iterations of the power method on A^T A (two coded jobs: A and A^T)",
    )
    parser.add_argument("--seed", type=_args.seed, default=0)
    parser.add_argument(
        "--straggle",
        type=_args.straggle,
        default="none",
        help="local cluster only: the --straggle spec of the first worker (e.g. slow:factor=10)",
    )
    parser.add_argument(
        "--compute-seconds",
        type=_args.seconds,
        default=0.0,
        help="local cluster only: emulated seconds for the whole A^T x (scaled by each "
        "block's share of the work; what --straggle slows down)",
    )
    parser.add_argument(
        "--deadline", type=_args.deadline, default=60.0, help="seconds per product (default 60)"
    )
    parser.add_argument(
        "--spares",
        type=_args.integer(0),
        default=0,
        help="local cluster only: extra worker processes the job does not use at first (where "
        "the blocks of a dead worker go)",
    )
    parser.add_argument(
        "--kill",
        type=kill_schedule,
        default=(),
        metavar="T:I[,T:I...]",
        help="local cluster, --power-iterations only: after iteration T kill worker I (w0I); "
        "the jobs re-place its blocks and keep answering",
    )


def _read_array(path: Path, flag: str) -> np.ndarray:
    """A finite float64 array from a .npy, or a dense one from a scipy.sparse .npz."""
    import numpy as np

    try:
        if path.suffix.lower() == ".npz":
            import scipy.sparse as sp

            array = np.asarray(sp.load_npz(path).toarray(), dtype=np.float64)
        else:
            array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (ValueError, OSError, TypeError) as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise UsageError(f"{flag}: {path} holds NaN or infinite values")
    return array


def _read_sparse_rhs(path: Path, rows: int) -> Any:
    """B for a coded A^T B: a finite CSR matrix with A's rows, from a scipy.sparse .npz."""
    import numpy as np
    import scipy.sparse as sp

    try:
        matrix = sp.load_npz(path)
    except (ValueError, OSError, TypeError) as exc:
        raise UsageError(f"--rhs: cannot read {path}: {exc}") from None
    if matrix.format != "csr":
        raise UsageError(
            f"--rhs: {path} holds a {matrix.format.upper()} matrix; the coded A^T B places B as "
            "CSR blocks: save scipy.sparse.csr_matrix(B) (or leave out --k-b)"
        )
    if not np.all(np.isfinite(matrix.data)):
        raise UsageError(f"--rhs: {path} holds NaN or infinite values")
    if matrix.shape[0] != rows:
        raise UsageError(f"--rhs: {path} has shape {matrix.shape}, expected A's {rows} rows")
    return sp.csr_matrix(matrix, dtype=np.float64)


def _load_operand(args: argparse.Namespace, rows: int) -> np.ndarray:
    """x (or a dense B) for A^T x; its first dimension must be A's rows."""
    import numpy as np

    if args.rhs or args.vector:
        flag, path = ("--rhs", args.rhs) if args.rhs else ("--vector", args.vector)
        operand = _read_array(path, flag)
        wanted = f"a vector of length {rows}" if flag == "--vector" else f"a {rows} x p matrix"
        ndim = 1 if flag == "--vector" else 2
        if operand.ndim != ndim or operand.shape[0] != rows:
            raise UsageError(
                f"{flag}: {path} has shape {operand.shape}, expected {wanted} (A has {rows} rows)"
            )
        return operand
    return np.random.default_rng(args.seed).standard_normal(rows)


def _coded_rhs(args: argparse.Namespace) -> bool:
    """Whether B is coded and placed (--k-b given; read before _check_args defaults it)."""
    return args.k_b is not None


def _check_args(args: argparse.Namespace) -> None:
    _args.check(args.k <= args.workers, f"--k must be <= --workers ({args.workers}), got {args.k}")
    _args.check(
        not (args.power_iterations and (args.vector or args.rhs)),
        "--power-iterations starts from a random vector: leave out --vector and --rhs",
    )
    _args.check(
        not args.kill or (args.power_iterations > 0 and not args.master),
        "--kill needs --power-iterations on a local cluster (no --master)",
    )
    bad = [w for _, w in args.kill if w >= args.workers + args.spares]
    _args.check(
        not bad, f"--kill: no worker {bad} (workers + spares: {args.workers + args.spares})"
    )
    coded = args.coded_rhs = _coded_rhs(args)
    _args.check(
        not coded or (bool(args.rhs) and args.rhs.suffix.lower() == ".npz"),
        "--k-b needs a sparse --rhs B.npz to code",
    )
    if not coded:
        args.k_b = 1
    else:
        _args.check(
            args.scheme != "dense",
            "--scheme dense codes A only; use sparse or poly for A^T B with a coded B",
        )
        _args.check(
            args.k * args.k_b <= args.workers,
            f"--k-a x --k-b must be <= --workers ({args.workers}), got {args.k} x {args.k_b}",
        )
    if args.scheme == "uncoded":
        _args.check(
            args.workers % args.k_b == 0,
            f"--scheme uncoded needs --k-b to divide --workers ({args.workers})",
        )
        args.k = args.workers // args.k_b


def _matmul(args: argparse.Namespace) -> int:
    from edgecode.bench.matmul import load_source

    _check_args(args)
    label, matrix = load_source(str(args.matrix), size=args.size, seed=args.seed)
    _args.check(
        matrix.shape[1] >= args.k,
        f"--k must be <= A's {matrix.shape[1]} columns (--matrix {args.matrix}, --size), got "
        f"{args.k}",
    )
    _args.check(matrix.nnz > 0, f"--matrix {args.matrix}: A has no non-zeros")
    rhs = _read_sparse_rhs(args.rhs, matrix.shape[0]) if args.coded_rhs else None
    operand = None
    if args.power_iterations == 0 and rhs is None:
        operand = _load_operand(args, matrix.shape[0])
    k_b = f", k_b={args.k_b}, B {rhs.shape[0]} x {rhs.shape[1]} coded" if rhs is not None else ""
    console().print(
        f"A: {label}, {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz} non-zeros; "
        f"{args.scheme} code, n={args.workers}, k={args.k}{k_b}"
    )
    if args.master:
        with remote(args.master, "the master"):
            return _on_master(args, args.master, matrix, operand, rhs, tls=client_tls(args))
    from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup

    workers = tuple(
        WorkerSetup(f"w{i:02d}", "edge-0", args.straggle if i == 0 else "none")
        for i in range(args.workers + args.spares)
    )
    with console().status(f"starting a local cluster of {len(workers)} workers ..."):
        cluster = LocalCluster(
            ClusterSetup(
                (EdgeSetup("edge-0"),),
                workers,
                compute_seconds=args.compute_seconds,
                seed=args.seed,
            )
        )
        cluster.start()
    try:
        with remote(cluster.master_address, "the local master"):
            return _on_master(
                args, cluster.master_address, matrix, operand, rhs, cluster.kill, cluster.client_tls
            )
    finally:
        cluster.stop()


def _submit(
    client: Any, args: argparse.Namespace, matrix: Any, job_id: str, rhs: Any = None
) -> Any:
    from edgecode.v1 import master_pb2

    spec = master_pb2.MatmulSpec(
        job_id=job_id,
        scheme=args.scheme,
        n=args.workers,
        k=args.k,
        k_b=args.k_b if rhs is not None else 1,
        seed=args.seed,
        deadline_seconds=args.deadline,
    )
    with console().status(f"encoding and placing {job_id} ..."):
        return client.submit_matmul(spec, matrix, rhs=rhs)


def job_summary(job: Any) -> dict[str, Any]:
    """A placed job as the table and the JSON show it."""
    import numpy as np

    return {
        "job_id": job.job_id,
        "scheme": job.scheme,
        "n": job.n,
        "k_a": job.k,
        "k_b": job.k_b,
        "weight_a": job.weight_a,
        "weight_b": job.weight_b,
        "weight": job.weight_a * job.weight_b,
        "counting_bound": job.weight_bound,
        "worst_condition": job.worst_condition,
        "tolerance": job.tolerance,
        "nnz_per_block": float(np.mean(job.block_nnz)),
        "rhs_nnz_per_block": float(np.mean(job.rhs_block_nnz)) if job.rhs_block_nnz else 0.0,
        "bytes_placed": int(sum(job.block_bytes) + sum(job.rhs_block_bytes)),
        "encode_seconds": job.encode_seconds,
        "place_seconds": job.place_seconds,
    }


def _show_job(job: Any) -> dict[str, Any]:
    summary = job_summary(job)
    weight = f"({job.weight_a}, {job.weight_b})" if job.k_b > 1 or job.rhs_cols else ""
    table(
        f"Matrix job {job.job_id}",
        ["measure", "value"],
        [
            [
                "weight achieved" + (" (omega_A, omega_B)" if weight else ""),
                weight or job.weight_a,
            ],
            ["counting bound" + (" on omega_A omega_B" if weight else ""), job.weight_bound],
            ["stragglers tolerated (n - k)", job.tolerance],
            ["worst condition number", job.worst_condition],
            ["non-zeros per block (mean)", summary["nnz_per_block"]],
            ["bytes placed", summary["bytes_placed"]],
            ["encode seconds", job.encode_seconds],
            ["place seconds", job.place_seconds],
        ],
    )
    return summary


def _on_master(
    args: argparse.Namespace,
    address: str,
    matrix: Any,
    operand: Any,
    rhs: Any,
    kill: Callable[[str], None] | None = None,
    tls: Tls | None = None,
) -> int:
    import numpy as np

    from edgecode.master.client import MasterClient

    client = MasterClient(address, tls)
    job_id = f"cli-{int(time.time() * 1000) % 10**9}"
    jobs = [job_id]
    document: dict[str, Any] = {}
    try:
        document["job"] = _show_job(_submit(client, args, matrix, job_id, rhs))
        if args.power_iterations > 0:
            jobs.append(job_id + "-T")
            _submit(client, args, matrix.T.tocsr(), jobs[1])
            result, document["power"] = _power(client, jobs, matrix, args, kill)
        else:
            result, document["product"] = _one_product(client, args, job_id, matrix, operand, rhs)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            np.save(args.out, result)
            console().print(f"wrote {args.out}")
        if args.json:
            from edgecode.cli.run import write_json

            write_json(args.json, document)
            console().print(f"wrote {args.json}")
    finally:
        for name in jobs:
            try:
                client.drop_matmul(name)
            except Exception:  # the job may not exist if its submit failed
                pass
        client.close()
    return 0


def _one_product(
    client: Any, args: argparse.Namespace, job_id: str, matrix: Any, operand: Any, rhs: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """One A^T x (or A^T B) with its error against the direct product."""
    import numpy as np

    from edgecode.master.client import product_of

    response = client.matmul(job_id, operand, timeout=args.deadline + 30)
    result = product_of(response)
    right = rhs if rhs is not None else operand
    direct = matrix.T @ right
    direct = np.asarray(direct.toarray() if hasattr(direct, "toarray") else direct)
    error = np.linalg.norm(result - direct) / max(float(np.linalg.norm(direct)), 1e-300)
    stragglers = [t.node for t in response.timings if not t.arrived]
    what = "A^T B" if result.ndim == 2 else "A^T x"
    console().print(
        f"{what} in {response.seconds * 1e3:.1f} ms from workers "
        f"{list(response.decoded_from)} (stragglers {stragglers}); "
        f"relative error vs the direct product {error:.2e}"
    )
    return result, {
        "seconds": response.seconds,
        "decoded_from": list(response.decoded_from),
        "stragglers": stragglers,
        "relative_error": float(error),
        "shape": list(result.shape),
    }


def _power(
    client: Any,
    jobs: list[str],
    matrix: Any,
    args: argparse.Namespace,
    kill: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """v <- A^T (A v) / norm: A v from the job on A^T, A^T y from the job on A. ``--kill``
    kills workers between iterations; every iteration's row says what the jobs re-placed."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    v = np.random.default_rng(args.seed).standard_normal(matrix.shape[1])
    v /= np.linalg.norm(v)
    kills = dict(args.kill)
    rows: list[dict[str, Any]] = []
    with Progress(
        TextColumn("power method"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=console(),
    ) as bar:
        task = bar.add_task("power", total=args.power_iterations, info="")
        for iteration in range(1, args.power_iterations + 1):
            v, row = _power_step(client, jobs, matrix, v, args.deadline + 30)
            rows.append({"iteration": iteration, **row})
            bar.update(task, advance=1, info=f"lambda {row['eigenvalue']:.6g}")
            if kill is not None and iteration in kills:
                kill(f"w{kills[iteration]:02d}")
                rows[-1]["killed_after"] = f"w{kills[iteration]:02d}"
    if args.kill:
        _show_healing(rows)
    worst = max(max(r["error_av"], r["error_atav"]) for r in rows) if rows else 0.0
    eigenvalue = rows[-1]["eigenvalue"] if rows else 0.0
    console().print(
        f"top eigenvalue of A^T A ~ {eigenvalue:.8g}; largest relative error of a product vs "
        f"the direct one: {worst:.2e}"
    )
    return np.asarray(v, dtype=np.float64), rows


def _power_step(
    client: Any, jobs: list[str], matrix: Any, v: np.ndarray, timeout: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """One iteration, checked against the direct products, with what each job re-placed."""
    import numpy as np

    from edgecode.master.client import product_of

    def error(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-300))

    started = time.perf_counter()
    first = client.matmul(jobs[1], v, timeout=timeout)  # A v
    y = product_of(first)
    second = client.matmul(jobs[0], y, timeout=timeout)  # A^T A v
    w = product_of(second)
    wall = time.perf_counter() - started
    status = client.get_matmul(jobs[0])
    row = {
        "eigenvalue": float(v @ w),
        "error_av": error(y, np.asarray(matrix @ v)),
        "error_atav": error(w, np.asarray(matrix.T @ y)),
        "ms": (first.seconds + second.seconds) * 1e3,
        "wall_ms": wall * 1e3,
        "replaced": [list(first.replaced), list(second.replaced)],
        "tolerance": status.tolerance,
        "node_tolerance": status.node_tolerance,
        "replacements": status.replacements,
        "epoch": status.placement_epoch,
    }
    return w / np.linalg.norm(w), row


HEALING_COLUMNS = (
    *("iteration", "killed after", "products ms", "calls ms", "re-placed (A^T, A job)"),
    *("tolerance",),
    *("nodes tolerated", "epoch", "max rel error"),
)


def _show_healing(rows: list[dict[str, Any]]) -> None:
    table(
        "Power iterations (tolerance of the job on A after the iteration)",
        HEALING_COLUMNS,
        [
            [
                r["iteration"],
                r.get("killed_after", ""),
                r["ms"],
                r["wall_ms"],
                str(r["replaced"]),
                r["tolerance"],
                r["node_tolerance"],
                r["epoch"],
                max(r["error_av"], r["error_atav"]),
            ]
            for r in rows
        ],
    )
