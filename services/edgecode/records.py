"""Records shared by roles and by the wire: one shape each, below :mod:`edgecode.wire`.

A role never imports another role; what two roles (or a role and a client) both need to name
lives here: the job spec and its round records, the placement and block headers a master sends
a worker, the matrix-job spec, and the one :class:`Timing` every layer reports.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecode.errors import InvalidInput

if TYPE_CHECKING:
    from edgecode.datapaths import DataDirs

#: Job ids: letters, digits, '-' and '_' (no path separators or control characters).
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Longest string field of a job spec.
MAX_SPEC_LENGTH = 512
#: Most partitions a job may ask for (code construction grows faster than linearly in K).
MAX_PARTITIONS = 10_000
#: Matrix-job ids additionally allow '.'.
MATRIX_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
#: States a job never leaves.
FINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Timing:
    """How one node did in one round, as seen by whoever waited for it.

    ``seconds`` runs from the fan-out to the answer (or to when it was given up); ``arrived``
    says whether a usable answer came; ``compute_seconds`` is what the node reported for its own
    computation; ``load_fraction`` the share of the data it held; ``edge`` the edge that saw it
    (empty when seen directly); ``error`` why it did not arrive, in words.
    """

    node: str
    seconds: float
    arrived: bool
    compute_seconds: float = 0.0
    load_fraction: float = 0.0
    edge: str = ""
    error: str = ""


@dataclass(frozen=True)
class PlacementHeader:
    """What a worker is told before its partitions stream in (one placement epoch)."""

    job_id: str
    model: str
    n_features: int
    n_classes: int
    partitions: tuple[int, ...]
    coefficients: tuple[float, ...]
    l2: float
    n_partitions: int
    epoch: int
    #: rows of each partition, in the order of ``partitions``
    rows: tuple[int, ...] = ()
    #: several vectors per answer: the message index of each partition (empty: one vector)
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class BlockHeader:
    """What a worker is told before its coded matrix block streams in."""

    job_id: str
    worker_index: int
    rows: int
    cols: int
    nnz: int
    epoch: int
    work_fraction: float
    #: "a": the coded A block C_i; "b": the coded B block of an A^T B job
    side: str = "a"


#: The two sides of a coded block.
BLOCK_SIDES = ("a", "b")


@dataclass(frozen=True)
class RoundRecord:
    """One completed training round as the job status reports it."""

    round: int
    seconds: float
    loss: float
    stragglers: int
    wall_seconds: float
    #: fraction of the partitions the round's result holds (1 for exact schemes)
    recovered_fraction: float = 1.0
    #: approximate schemes: ||B_A^T a - 1||^2 / K (0 when exact)
    residual: float = 0.0
    #: where the round's time went at the master (the bench's breakdown)
    send_seconds: float = 0.0
    wait_seconds: float = 0.0
    decode_seconds: float = 0.0
    step_seconds: float = 0.0


@dataclass(frozen=True)
class JobConfig:
    """A training job as submitted (see ``JobSpec`` in master.proto)."""

    scheme: str = "hgc"
    dataset: str = "breast_cancer"
    model: str = ""
    rounds: int = 50
    optimizer: str = "nesterov"
    learning_rate: float = 0.0
    s_edge: int = 1
    s_worker: int = 1
    s_flat: int = 1
    seed: int = 0
    partitions: int = 0
    checkpoint_every: int = 10
    round_deadline_seconds: float = 30.0
    l2: float = 0.0
    job_id: str = ""
    record_params: bool = False
    profile_rounds: int = 3
    replan_every: int = 0
    lr_schedule: str = ""
    alpha: float = 1.0
    partial_design: str = "auto"
    vectors: int = 0
    partial_scale: str = "rescale"
    base_code: str = "crc"
    wait: int = 0
    shuffle_every: int = 0
    shuffle: str = "random"
    shuffle_budget: int = 0
    verify: bool = False
    verify_slack_seconds: float = 0.01
    quarantine_after: int = 3

    def optimizer_object(self) -> Any:
        """A fresh optimizer of this job (ValueError naming a bad spec)."""
        from edgecode.learning.optimizers import get_optimizer

        extra = {"schedule": self.lr_schedule} if self.lr_schedule else {}
        return get_optimizer(self.optimizer, self.learning_rate or None, **extra)

    def validate(self, data_dirs: DataDirs | None = None) -> None:
        """Refuse at submission what could only fail later (INVALID_ARGUMENT, nothing started).

        With ``data_dirs`` (a service's confinement) a data set or model FILE outside those
        folders is refused (NotAllowed) before anything looks at it."""
        from edgecode.learning.datasets import check_dataset_spec
        from edgecode.learning.references import check_model_reference

        if self.scheme not in JOB_SCHEMES:
            raise InvalidInput(f"scheme must be one of {JOB_SCHEMES}, got {self.scheme!r}")
        for name in ("dataset", "model", "optimizer", "lr_schedule", "job_id"):
            if len(getattr(self, name)) > MAX_SPEC_LENGTH:
                raise InvalidInput(f"{name} is longer than {MAX_SPEC_LENGTH} characters")
        if data_dirs is not None:
            self.confine_files(data_dirs)
        if self.model:
            try:
                check_model_reference(self.model)
            except ValueError as exc:  # BadModel is an InvalidInput, itself a ValueError
                raise InvalidInput(f"model: {exc}") from None
        if not (self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise InvalidInput(
                f"learning_rate must be a finite number >= 0 (0 = default), got {self.learning_rate}"
            )
        if not (0 < self.round_deadline_seconds <= 86_400):
            raise InvalidInput(
                "round_deadline_seconds must be > 0 and at most a day, got "
                f"{self.round_deadline_seconds}"
            )
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise InvalidInput(f"l2 must be a finite number >= 0, got {self.l2}")
        try:
            self.optimizer_object()
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"optimizer: {exc}") from None
        try:
            check_dataset_spec(self.dataset)
        except (ValueError, FileNotFoundError) as exc:
            raise InvalidInput(f"dataset: {exc}") from None
        if not 1 <= self.rounds <= 1_000_000:
            raise InvalidInput(f"rounds must be in [1, 1000000], got {self.rounds}")
        if self.partitions > MAX_PARTITIONS:
            raise InvalidInput(
                f"partitions must be at most {MAX_PARTITIONS} (0 = chosen from the code), got "
                f"{self.partitions}"
            )
        self._validate_scheme_options()
        counts = (
            "partitions",
            "checkpoint_every",
            "s_flat",
            "s_worker",
            "seed",
            "profile_rounds",
            "replan_every",
            "vectors",
            "wait",
            "shuffle_every",
            "shuffle_budget",
        )
        negative = [name for name in counts if getattr(self, name) < 0]
        if negative:
            raise InvalidInput(f"{', '.join(negative)} must be >= 0")
        if self.job_id and not JOB_ID.match(self.job_id):
            raise InvalidInput(f"job_id must be 1-64 letters, digits, - or _, got {self.job_id!r}")

    def confine_files(self, data_dirs: DataDirs) -> None:
        """NotAllowed unless every file this job names (a data set file, a ``torch:PATH.py``
        model) lies inside ``data_dirs``; bundled, synthetic and installed-module names pass."""
        from edgecode.learning.datasets import DATASET_NAMES, FILE_SUFFIXES, dataset_file
        from edgecode.learning.references import TORCH_PREFIX, parse_model_reference

        path = dataset_file(self.dataset) if self.dataset.strip() else None
        if path is not None:
            if not (Path(path).suffix.lower() in FILE_SUFFIXES or "/" in path or os.sep in path):
                # A name, not a path: say so without looking for a file of that name.
                raise InvalidInput(
                    f"dataset must be one of {list(DATASET_NAMES)} or a data file path, "
                    f"got {self.dataset!r}"
                )
            data_dirs.confine(path, "dataset")
        if self.model.startswith(TORCH_PREFIX):
            try:
                reference = parse_model_reference(self.model)
            except ValueError:
                return  # malformed: validate() refuses it next, without touching any file
            if reference.is_file:
                data_dirs.confine(reference.source, "model")

    def _validate_scheme_options(self) -> None:
        """The options of partial recovery and approximate decoding."""
        if not (0 < self.alpha <= 1):  # NaN fails too
            raise InvalidInput(f"alpha must satisfy 0 < alpha <= 1, got {self.alpha}")
        choices = {
            "partial_design": ("auto", "cyclic", "subset"),
            "partial_scale": ("rescale", "none", "inverse-probability"),
            "base_code": ("frc", "crc"),
            "shuffle": ("random", "aware"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidInput(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (0 <= self.verify_slack_seconds <= self.round_deadline_seconds):
            raise InvalidInput(
                "verify_slack_seconds must be in [0, round_deadline_seconds], got "
                f"{self.verify_slack_seconds}"
            )
        if self.quarantine_after < 1:
            raise InvalidInput(f"quarantine_after must be >= 1, got {self.quarantine_after}")
        if self.scheme == "approx-shuffle" and not self.shuffle_every:
            raise InvalidInput("approx-shuffle needs shuffle_every >= 1 (rounds between shuffles)")


#: The schemes of a training job (see master/layout.py).
JOB_SCHEMES = ("hgc", "flat", "uncoded", "ignore", "partial", "approx", "approx-shuffle")
MATRIX_SCHEMES = ("sparse", "dense", "poly", "uncoded")
#: Largest n a matrix job may use (the condition scan enumerates k-subsets up to a limit).
MAX_MATRIX_WORKERS = 256


@dataclass(frozen=True)
class MatmulSpec:
    """How a matrix job is coded and where it runs (see ``MatmulSpec`` in master.proto)."""

    scheme: str = "sparse"
    n: int = 6
    k: int = 4
    seed: int = 0
    deadline_seconds: float = 0.0
    job_id: str = ""
    #: worker addresses by code index; empty = the first n workers of the cluster
    workers: tuple[str, ...] = ()
    #: A^T B with both operands coded: B's block-columns (any k * k_b workers decode)
    k_b: int = 1

    @property
    def threshold(self) -> int:
        """Results needed to decode: k (A^T x) or k * k_b (A^T B)."""
        return self.k * self.k_b

    def validated(self) -> MatmulSpec:
        """This spec, or InvalidInput naming the first bad field."""
        if self.scheme not in MATRIX_SCHEMES:
            raise InvalidInput(f"scheme must be one of {list(MATRIX_SCHEMES)}, got {self.scheme!r}")
        if not 1 <= self.n <= MAX_MATRIX_WORKERS:
            raise InvalidInput(f"n must be in [1, {MAX_MATRIX_WORKERS}], got {self.n}")
        if not 1 <= self.k <= self.n:
            raise InvalidInput(f"k must be in [1, n={self.n}], got {self.k}")
        if not 1 <= self.k_b <= self.n:
            raise InvalidInput(f"k_b must be in [1, n={self.n}], got {self.k_b}")
        if self.threshold > self.n:
            raise InvalidInput(
                f"k * k_b must be at most n (any k * k_b of the n workers decode), got "
                f"{self.k} * {self.k_b} = {self.threshold} > n={self.n}"
            )
        if self.scheme == "dense" and self.k_b > 1:
            raise InvalidInput("scheme dense codes A only (k_b = 1); poly is the dense A^T B code")
        if self.scheme == "uncoded" and self.threshold != self.n:
            raise InvalidInput(
                f"uncoded needs k * k_b = n (every worker answers), got {self.threshold}"
            )
        if self.seed < 0:
            raise InvalidInput(f"seed must be >= 0, got {self.seed}")
        if not (np.isfinite(self.deadline_seconds) and self.deadline_seconds >= 0):
            raise InvalidInput(f"deadline_seconds must be >= 0, got {self.deadline_seconds}")
        if self.job_id and not MATRIX_JOB_ID.match(self.job_id):
            raise InvalidInput(
                f"job_id must be 1-128 letters, digits, '.', '-' or '_', got {self.job_id!r}"
            )
        if self.workers and len(self.workers) != self.n:
            raise InvalidInput(f"workers must list n={self.n} addresses, got {len(self.workers)}")
        return self


@dataclass(frozen=True)
class JobStatus:
    """A training job as its status reports it (a snapshot; see ``JobStatus`` in master.proto)."""

    job_id: str
    state: str
    config: JobConfig
    round: int = 0
    message: str = ""
    history: tuple[RoundRecord, ...] = ()
    accuracy: float = float("nan")
    predicted_round_seconds: float = 0.0
    plan_json: str = ""
    last_timings: tuple[Timing, ...] = ()
    placements: int = 0
    setup_seconds: float = 0.0
    placement_seconds: float = 0.0
    partition_usage: tuple[float, ...] = ()
    shuffle_bytes: int = 0
    shuffles: int = 0
    inconsistent_rounds: int = 0
    quarantined: tuple[str, ...] = ()
    params: np.ndarray | None = None
    param_history: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class MatmulJobStatus:
    """A placed matrix job (see ``MatmulJob`` in master.proto)."""

    job_id: str
    scheme: str
    n: int
    k: int
    rows: int
    cols: int
    worst_condition: float
    block_nnz: tuple[int, ...]
    block_bytes: tuple[int, ...]
    encode_seconds: float
    place_seconds: float
    products: int
    #: A^T B jobs: B's block-columns and width (1 and 0 for A^T x)
    k_b: int = 1
    rhs_cols: int = 0
    #: (omega_a, omega_b) achieved and the counting bound on omega_a * omega_b
    weight: tuple[int, int] = (0, 0)
    weight_bound: int = 0
    rhs_block_nnz: tuple[int, ...] = ()
    rhs_block_bytes: tuple[int, ...] = ()
    state: str = RUNNING
    message: str = ""
    #: stragglers tolerated now: code indices on live workers minus k, and whole workers
    tolerance: int = 0
    node_tolerance: int = 0
    #: worker address of each code index
    workers: tuple[str, ...] = ()
    epoch: int = 0
    replacements: int = 0
    replaced_bytes: int = 0


@dataclass(frozen=True)
class MatmulProduct:
    """One decoded product ``A^T x`` of a matrix job; timings name workers by code index."""

    job_id: str
    sequence: int
    value: np.ndarray
    seconds: float
    decoded_from: tuple[int, ...]
    timings: tuple[Timing, ...]
    #: code indices re-placed after this product (their workers were gone)
    replaced: tuple[int, ...] = ()
