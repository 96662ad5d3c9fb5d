"""A training job's live state and what it trains: shared by the job API and the trainer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecode.errors import RoundFailed
from edgecode.learning.datasets import Dataset
from edgecode.learning.models import Model
from edgecode.master.layout import Layout
from edgecode.records import FINAL, PENDING, JobConfig, JobStatus, RoundRecord, Timing


@dataclass
class Job:
    """A training job's live state; :meth:`status` is the snapshot the API returns."""

    job_id: str
    config: JobConfig
    state: str = PENDING
    message: str = ""
    round: int = 0
    history: list[RoundRecord] = field(default_factory=list)
    params: np.ndarray | None = None
    accuracy: float = float("nan")
    last_timings: tuple[Timing, ...] = ()
    layout: Layout | None = None
    param_history: list[np.ndarray] = field(default_factory=list)
    placements: int = 0
    setup_seconds: float = 0.0
    placement_seconds: float = 0.0
    partition_usage: tuple[float, ...] = ()
    shuffle_bytes: int = 0
    shuffles: int = 0
    inconsistent_rounds: int = 0
    quarantined: tuple[str, ...] = ()
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    started: float = field(default_factory=time.monotonic)

    def status(self, include_params: bool = False) -> JobStatus:
        with self.changed:
            layout = self.layout
            return JobStatus(
                job_id=self.job_id,
                state=self.state,
                config=self.config,
                round=self.round,
                message=self.message,
                history=tuple(self.history),
                accuracy=self.accuracy,
                predicted_round_seconds=layout.predicted_round_seconds if layout else 0.0,
                plan_json=layout.plan_json if layout else "",
                last_timings=self.last_timings,
                placements=self.placements,
                setup_seconds=self.setup_seconds,
                placement_seconds=self.placement_seconds,
                partition_usage=self.partition_usage,
                shuffle_bytes=self.shuffle_bytes,
                shuffles=self.shuffles,
                inconsistent_rounds=self.inconsistent_rounds,
                quarantined=self.quarantined,
                params=self.params if include_params else None,
                param_history=tuple(self.param_history) if include_params else (),
            )

    def update(self, **changes: Any) -> None:
        """Change fields and wake the watchers."""
        with self.changed:
            for key, value in changes.items():
                setattr(self, key, value)
            self.changed.notify_all()

    @property
    def finished(self) -> bool:
        return self.state in FINAL


@dataclass
class Problem:
    """The data, model and optimizer of a job."""

    train: Dataset
    test: Dataset
    model_name: str
    model: Model
    n_params: int
    #: most partitions the data allows (enough rows in each to be worth a message)
    max_partitions: int


class JobCancelled(RoundFailed):
    """The job was cancelled while it was being set up."""
