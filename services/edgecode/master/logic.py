"""The master's job API: submit, status, watch, cancel, and resume after a restart.

No gRPC here: edges, workers and the coordinator are reached through the injected
:class:`~edgecode.master.ports.Transport` and :class:`~edgecode.master.ports.ClusterView`; job
records and checkpoints through a :class:`~edgecode.master.checkpoints.CheckpointStore`. Each job
runs in its own thread (:class:`~edgecode.master.training.Trainer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from edgecode.errors import InvalidInput, UnknownJob
from edgecode.master.checkpoints import (
    CheckpointStore,
    DamagedCheckpoint,
    NoCheckpoints,
    SavedJob,
)
from edgecode.master.ports import ClusterView, MasterMetricsPort, NoMasterMetrics, Transport
from edgecode.master.training import Job, Trainer
from edgecode.records import FAILED, FINAL, JobConfig

log = logging.getLogger(__name__)


class MasterLogic:
    """Training jobs by id."""

    def __init__(
        self,
        transport: Transport,
        cluster: ClusterView,
        store: CheckpointStore | None = None,
        metrics: MasterMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._cluster = cluster
        self._store: CheckpointStore = store if store is not None else NoCheckpoints()
        self._metrics: MasterMetricsPort = metrics if metrics is not None else NoMasterMetrics()
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="master-io")
        self._counter = 0

    def submit(self, config: JobConfig) -> str:
        """Validate and start a job; returns its id."""
        config.validate()
        with self._lock:
            self._counter += 1
            job_id = config.job_id or f"job-{int(time.time())}-{self._counter}"
            if job_id in self._jobs and self._jobs[job_id].state not in FINAL:
                raise InvalidInput(f"job {job_id!r} is already running")
            job = Job(job_id=job_id, config=replace(config, job_id=job_id))
            self._jobs[job_id] = job
        self._store.save_job(SavedJob(job.config, job.state))
        self._start(job)
        return job_id

    def _start(self, job: Job) -> None:
        trainer = Trainer(
            job, self._transport, self._cluster, self._store, self._metrics, self._pool, self._clock
        )
        threading.Thread(target=trainer.run, name=f"job-{job.job_id}", daemon=True).start()

    def job(self, job_id: str) -> Job:
        """The job, or UnknownJob."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop after its current round."""
        job = self.job(job_id)
        job.cancel.set()
        return job

    def watch(self, job_id: str, is_active: Callable[[], bool]) -> Iterator[Job]:
        """Yield the job after each change until it ends (or the watcher goes away)."""
        job = self.job(job_id)
        seen = -1
        while is_active():
            with job.changed:
                if job.round == seen and not job.finished:
                    job.changed.wait(timeout=1.0)
                current = job.round
            if current != seen or job.finished:
                seen = current
                yield job
                if job.finished:
                    return

    def resume_all(self) -> list[str]:
        """Resume every stored job that did not finish (after a master restart)."""
        resumed = []
        for saved in self._store.jobs():
            if isinstance(saved, DamagedCheckpoint):
                log.warning("ignoring %s", saved)
                continue
            if saved.state in FINAL:
                continue
            job = Job(job_id=saved.config.job_id, config=saved.config)
            try:
                restored = self._store.load(job.job_id)
            except DamagedCheckpoint as exc:
                self._store.quarantine(job.job_id, str(exc))
                job.update(state=FAILED, message=str(exc))
                restored = None
            if restored is not None:  # show the checkpointed progress at once
                job.params, job.round, job.history = (
                    restored.params,
                    restored.round,
                    list(restored.history),
                )
            with self._lock:
                self._jobs[job.job_id] = job
            if job.state not in FINAL:
                self._start(job)
                resumed.append(job.job_id)
        return resumed

    def close(self) -> None:
        """Stop every job (after its current round) and the I/O pool."""
        for job in list(self._jobs.values()):
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
