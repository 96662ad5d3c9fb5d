"""Job records and checkpoints behind a small store Protocol (files here, memory in tests).

A job folder holds ``job.json`` (the config, its state and message) and ``checkpoint.json``
(rounds done, parameters, optimizer state, history, and the hash of the config that made them).
Writes are atomic (temporary file, fsync, rename): a crash leaves the old or the new file,
never a torn one. Reads validate everything; a damaged file raises :class:`DamagedCheckpoint`
naming what is wrong, and :meth:`FileCheckpoints.quarantine` moves it aside.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgecode.errors import EdgecodeError
from edgecode.records import JobConfig, RoundRecord

log = logging.getLogger(__name__)


class DamagedCheckpoint(EdgecodeError):
    """A job record or checkpoint that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """What a job needs to resume after its last completed round."""

    round: int
    params: np.ndarray
    optimizer: dict[str, Any]
    history: tuple[RoundRecord, ...]
    config_hash: str


@dataclass(frozen=True)
class SavedJob:
    """A job record as stored: its config, state and message."""

    config: JobConfig
    state: str
    message: str = ""


def config_hash(config: JobConfig) -> str:
    """A stable digest of everything that shapes a job's trajectory."""
    data = json.dumps(asdict(config), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


class CheckpointStore(Protocol):
    """Where a master keeps job records and checkpoints."""

    def save_job(self, job: SavedJob) -> None: ...

    def save(self, job_id: str, checkpoint: Checkpoint) -> None: ...

    def load(self, job_id: str) -> Checkpoint | None:
        """The job's checkpoint, None when it has none; DamagedCheckpoint when unreadable."""
        ...

    def jobs(self) -> list[SavedJob | DamagedCheckpoint]:
        """Every stored job record (damaged ones as the error naming them)."""
        ...

    def quarantine(self, job_id: str, reason: str) -> None:
        """Move a job's damaged files aside (kept for inspection, never read again)."""
        ...

    def forget(self, job_id: str) -> None:
        """Delete a job's record and checkpoint (retention)."""
        ...


class NoCheckpoints:
    """Keeps nothing (a master without a checkpoint folder)."""

    def save_job(self, job: SavedJob) -> None:
        pass

    def save(self, job_id: str, checkpoint: Checkpoint) -> None:
        pass

    def load(self, job_id: str) -> Checkpoint | None:
        return None

    def jobs(self) -> list[SavedJob | DamagedCheckpoint]:
        return []

    def quarantine(self, job_id: str, reason: str) -> None:
        pass

    def forget(self, job_id: str) -> None:
        pass


class FileCheckpoints:
    """Job folders under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, job_id: str) -> Path:
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_job(self, job: SavedJob) -> None:
        data = {"config": asdict(job.config), "state": job.state, "message": job.message}
        _atomic_write(self._folder(job.config.job_id) / "job.json", json.dumps(data).encode())

    def save(self, job_id: str, checkpoint: Checkpoint) -> None:
        state = {
            "round": checkpoint.round,
            "optimizer": _jsonable(checkpoint.optimizer),
            "history": [asdict(r) for r in checkpoint.history],
            "params": checkpoint.params.tolist(),
            "config_hash": checkpoint.config_hash,
        }
        _atomic_write(self._folder(job_id) / "checkpoint.json", json.dumps(state).encode())

    def load(self, job_id: str) -> Checkpoint | None:
        path = self.root / job_id / "checkpoint.json"
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
            optimizer = dict(state["optimizer"])
            if optimizer.get("iterate") is not None:
                optimizer["iterate"] = np.asarray(optimizer["iterate"], dtype=np.float64)
            params = np.asarray(state["params"], dtype=np.float64)
            history = tuple(RoundRecord(**r) for r in state["history"])
            rounds = int(state["round"])
            digest = str(state.get("config_hash", ""))
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            raise DamagedCheckpoint(f"checkpoint of job {job_id!r} is unreadable: {exc}") from None
        if params.ndim != 1 or not np.all(np.isfinite(params)):
            raise DamagedCheckpoint(f"checkpoint of job {job_id!r}: parameters are not finite")
        if rounds < 0 or len(history) < rounds:
            raise DamagedCheckpoint(
                f"checkpoint of job {job_id!r}: {rounds} rounds but {len(history)} records"
            )
        return Checkpoint(rounds, params, optimizer, history[:rounds], digest)

    def jobs(self) -> list[SavedJob | DamagedCheckpoint]:
        if not self.root.is_dir():
            return []
        out: list[SavedJob | DamagedCheckpoint] = []
        for spec_file in sorted(self.root.glob("*/job.json")):
            job_id = spec_file.parent.name
            try:
                saved = json.loads(spec_file.read_text())
                known = {f.name for f in fields(JobConfig)}
                config = JobConfig(**{k: v for k, v in saved["config"].items() if k in known})
                if config.job_id != job_id:
                    raise ValueError(f"it names job {config.job_id!r}")
                out.append(SavedJob(config, str(saved["state"]), str(saved.get("message", ""))))
            except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
                out.append(DamagedCheckpoint(f"job record {job_id!r} is unreadable: {exc}"))
        return out

    def quarantine(self, job_id: str, reason: str) -> None:
        folder = self.root / job_id
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for name in ("checkpoint.json", "job.json"):
            path = folder / name
            if path.exists():
                target = path.with_name(f"{name}.damaged-{stamp}")
                os.replace(path, target)
                log.warning("moved %s aside to %s: %s", path, target.name, reason)

    def forget(self, job_id: str) -> None:
        folder = self.root / job_id
        for name in ("checkpoint.json", "job.json"):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:  # damaged files kept aside, or never created
            pass


def _jsonable(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename over the target: a crash leaves the old or
    the new file, never a torn one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
