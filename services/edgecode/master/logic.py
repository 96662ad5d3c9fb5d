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

from edgecode.errors import AlreadyExists, UnknownJob
from edgecode.master.checkpoints import (
    CheckpointStore,
    DamagedCheckpoint,
    NoCheckpoints,
    SavedJob,
)
from edgecode.master.jobs import Job
from edgecode.master.ports import ClusterView, MasterMetricsPort, NoMasterMetrics, Transport
from edgecode.master.training import Trainer
from edgecode.records import CANCELLED, FAILED, PENDING, JobConfig

log = logging.getLogger(__name__)

#: Finished jobs whose records (status, history, parameters) are kept.
RETENTION = 200


class MasterLogic:
    """Training jobs by id."""

    def __init__(
        self,
        transport: Transport,
        cluster: ClusterView,
        store: CheckpointStore | None = None,
        metrics: MasterMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        retention: int = RETENTION,
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
        self._retention = retention

    def submit(self, config: JobConfig) -> str:
        """Validate and start a job; returns its id.

        A job id names one job: the same config under an existing id is that job (running or
        succeeded: nothing new starts; failed or cancelled: it resumes from its checkpoint),
        a different config is refused with :class:`AlreadyExists`."""
        config.validate()
        with self._lock:
            self._counter += 1
            job_id = config.job_id or f"job-{int(time.time())}-{self._counter}"
            config = replace(config, job_id=job_id)
            existing = self._jobs.get(job_id)
            if existing is not None:
                if existing.config != config:
                    raise AlreadyExists(
                        f"job {job_id!r} exists with a different configuration; choose another "
                        "job_id"
                    )
                if existing.state not in (FAILED, CANCELLED):
                    return job_id
            job = Job(job_id=job_id, config=config)
            self._jobs[job_id] = job
            self._retire_finished()
        self._store.save_job(SavedJob(job.config, job.state))
        self._start(job)
        return job_id

    def _retire_finished(self) -> None:
        """Keep at most ``retention`` finished jobs (the oldest go, records included)."""
        finished = [j for j in self._jobs.values() if j.finished]
        for job in finished[: max(0, len(finished) - self._retention)]:
            del self._jobs[job.job_id]
            self._store.forget(job.job_id)

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
        """After a master restart: resume every stored job that did not finish, and keep the
        finished ones' records (their status stays readable). A damaged record or checkpoint is
        moved aside and its job marked failed; every other job is served as usual."""
        resumed = []
        for saved in self._store.jobs():
            if isinstance(saved, DamagedCheckpoint):
                log.warning("%s", saved)
                continue
            job = Job(job_id=saved.config.job_id, config=saved.config, state=saved.state)
            job.message = saved.message
            try:
                restored = self._store.load(job.job_id)
            except DamagedCheckpoint as exc:
                self._store.quarantine(job.job_id, str(exc))
                job.update(state=FAILED, message=f"{exc}; the file was moved aside")
                self._store.save_job(SavedJob(job.config, job.state, job.message))
                restored = None
            if restored is not None:  # show the checkpointed progress at once
                job.params, job.round = restored.params, restored.round
                job.history = list(restored.history)
            with self._lock:
                self._jobs[job.job_id] = job
            if not job.finished:
                job.state = PENDING
                self._start(job)
                resumed.append(job.job_id)
        with self._lock:
            self._retire_finished()
        return resumed

    def close(self) -> None:
        """Stop every job (after its current round) and the I/O pool."""
        for job in list(self._jobs.values()):
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
