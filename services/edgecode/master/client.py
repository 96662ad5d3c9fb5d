"""A client of the master's job API (used by ``edgecode train`` and ``edgecode run``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from edgecode import wire
from edgecode.records import JobConfig
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import master_pb2, master_pb2_grpc

STATE_NAMES = {v: k for k, v in master_pb2.JobState.items()}
FINAL_STATES = {
    master_pb2.JOB_STATE_SUCCEEDED,
    master_pb2.JOB_STATE_FAILED,
    master_pb2.JOB_STATE_CANCELLED,
}


def state_name(status: master_pb2.JobStatus) -> str:
    return STATE_NAMES[status.state].removeprefix("JOB_STATE_").lower()


class MasterClient:
    """The master's job API over one channel (mutual TLS with ``tls``: a ``user`` or ``admin``
    certificate; plaintext without, for a master started with --insecure)."""

    def __init__(self, address: str, tls: Tls | None = None) -> None:
        self._channel = make_channel(address, tls)
        self._stub = master_pb2_grpc.MasterStub(self._channel)

    def submit(self, config: JobConfig, timeout: float = 30.0) -> str:
        return str(
            self._stub.SubmitJob(
                master_pb2.SubmitJobRequest(spec=wire.job_config_to_proto(config)), timeout=timeout
            ).job_id
        )

    def status(
        self, job_id: str, include_params: bool = False, timeout: float = 30.0
    ) -> master_pb2.JobStatus:
        status: master_pb2.JobStatus = self._stub.GetJob(
            master_pb2.GetJobRequest(job_id=job_id, include_params=include_params), timeout=timeout
        )
        return status

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[master_pb2.JobStatus]:
        """The job's status after every round until it ends, each with the whole history (the
        master sends only the new records; they are joined here)."""
        request = master_pb2.GetJobRequest(job_id=job_id, history_delta=True)
        history: list[master_pb2.RoundRecord] = []
        for status in self._stub.WatchJob(request, timeout=timeout):
            if status.history_offset != len(history):
                raise RuntimeError(
                    f"watch of {job_id}: history resumed at record {status.history_offset}, "
                    f"{len(history)} received"
                )
            history.extend(status.history)
            del status.history[:]
            status.history.extend(history)
            status.history_offset = 0
            yield status

    def cancel(self, job_id: str) -> master_pb2.JobStatus:
        status: master_pb2.JobStatus = self._stub.CancelJob(
            master_pb2.CancelJobRequest(job_id=job_id), timeout=30.0
        )
        return status

    def wait(
        self,
        job_id: str,
        on_status: Callable[[master_pb2.JobStatus], None] | None = None,
        timeout: float | None = None,
    ) -> master_pb2.JobStatus:
        """Follow the job until it ends; returns its final status (with parameters)."""
        for status in self.watch(job_id, timeout):
            if on_status is not None:
                on_status(status)
            if status.state in FINAL_STATES:
                break
        return self.status(job_id, include_params=True)

    # ---- matrix jobs -------------------------------------------------------------------------
    def submit_matmul(
        self,
        spec: master_pb2.MatmulSpec,
        matrix: Any = None,
        timeout: float = 600.0,
        rhs: Any = None,
    ) -> master_pb2.MatmulJob:
        """Submit a matrix job; ``matrix`` (scipy.sparse) is streamed in row chunks unless the
        spec names a ``matrix_path`` the master reads. ``rhs`` (B, scipy.sparse CSR) makes it an
        A^T B job with both operands coded: B's row chunks follow A's (or the spec names a
        ``rhs_path``)."""

        def messages() -> Iterator[master_pb2.SubmitMatmulRequest]:
            head = master_pb2.MatmulSpec()
            head.CopyFrom(spec)
            if matrix is not None:
                head.rows, head.cols = int(matrix.shape[0]), int(matrix.shape[1])
                head.nnz = int(matrix.nnz)
            if rhs is not None:
                head.rhs_rows, head.rhs_cols = int(rhs.shape[0]), int(rhs.shape[1])
                head.rhs_nnz = int(rhs.nnz)
            yield master_pb2.SubmitMatmulRequest(spec=head)
            if matrix is not None:
                for first_row, rows in wire.csr_row_chunks(matrix, wire.CHUNK_BYTES):
                    yield master_pb2.SubmitMatmulRequest(
                        chunk=master_pb2.MatrixChunk(
                            first_row=first_row, rows=wire.csr_to_proto(rows)
                        )
                    )
            if rhs is not None:
                for first_row, rows in wire.csr_row_chunks(rhs, wire.CHUNK_BYTES):
                    yield master_pb2.SubmitMatmulRequest(
                        rhs_chunk=master_pb2.MatrixChunk(
                            first_row=first_row, rows=wire.csr_to_proto(rows)
                        )
                    )

        job: master_pb2.MatmulJob = self._stub.SubmitMatmul(messages(), timeout=timeout)
        return job

    def matmul(
        self, job_id: str, operand: np.ndarray | None = None, timeout: float = 120.0
    ) -> master_pb2.MatmulResponse:
        """``A^T operand`` of a submitted job, or ``A^T B`` of an A^T B job (no operand); see
        :func:`product_of`."""
        request = master_pb2.MatmulRequest(job_id=job_id)
        if operand is not None:
            array = np.ascontiguousarray(operand, dtype=np.float64)
            wire.tensor_to_proto(array, out=request.operand)
        response: master_pb2.MatmulResponse = self._stub.Matmul(request, timeout=timeout)
        return response

    def get_matmul(
        self, job_id: str, check_health: bool = False, timeout: float = 30.0
    ) -> master_pb2.MatmulJob:
        """A matrix job's status (weights, tolerance, placement); ``check_health`` first
        re-places the blocks of gone workers."""
        job: master_pb2.MatmulJob = self._stub.GetMatmul(
            master_pb2.GetMatmulRequest(job_id=job_id, check_health=check_health),
            timeout=timeout,
        )
        return job

    def drop_matmul(self, job_id: str, timeout: float = 30.0) -> master_pb2.MatmulJob:
        job: master_pb2.MatmulJob = self._stub.DropMatmul(
            master_pb2.DropMatmulRequest(job_id=job_id), timeout=timeout
        )
        return job

    def close(self) -> None:
        self._channel.close()


def params_of(status: master_pb2.JobStatus) -> np.ndarray:
    return wire.tensor_from_proto(status.params, "params", dtype="float64", shape=[None])


def product_of(response: master_pb2.MatmulResponse) -> np.ndarray:
    return wire.tensor_from_proto(response.product, "product", dtype="float64")


def param_history_of(status: master_pb2.JobStatus) -> list[np.ndarray]:
    return [
        wire.tensor_from_proto(t, "param_history", dtype="float64", shape=[None])
        for t in status.param_history
    ]


def summary(
    status: master_pb2.JobStatus, end_to_end_seconds: float | None = None
) -> dict[str, Any]:
    """The per-scheme result ``edgecode run --json`` writes.

    ``setup_seconds`` (load, plan, first placement) and ``placement_seconds`` (every placement)
    are the master's; each round's ``wall_seconds`` counts from the end of setup, so
    ``setup_seconds + wall_seconds[i]`` is the time from the job's start to the end of round i.
    ``end_to_end_seconds`` is the caller's own measure, from submit to the final status.
    """
    seconds = [r.seconds for r in status.history]
    return {
        "scheme": status.spec.scheme,
        "job_id": status.job_id,
        "state": state_name(status),
        "message": status.message,
        "rounds": len(status.history),
        "mean_round_seconds": float(np.mean(seconds)) if seconds else float("nan"),
        "median_round_seconds": float(np.median(seconds)) if seconds else float("nan"),
        "round_seconds": seconds,
        "wall_seconds": [r.wall_seconds for r in status.history],
        "loss": [r.loss for r in status.history],
        "accuracy": status.accuracy,
        "stragglers": [r.stragglers for r in status.history],
        "predicted_round_seconds": status.predicted_round_seconds or None,
        "placements": status.placements,
        "setup_seconds": status.setup_seconds,
        "placement_seconds": status.placement_seconds,
        "end_to_end_seconds": end_to_end_seconds,
        "plan": status.plan_json or None,
        # partial and approximate schemes (papers 3 and 2), shuffles, verify
        "recovered_fraction": [r.recovered_fraction for r in status.history],
        "decoding_residual": [r.residual for r in status.history],
        "partition_usage": list(status.partition_usage),
        "shuffle_bytes": status.shuffle_bytes,
        "shuffles": status.shuffles,
        "inconsistent_rounds": status.inconsistent_rounds,
        "quarantined": list(status.quarantined),
        # where each round's time went at the master
        "send_seconds": [r.send_seconds for r in status.history],
        "wait_seconds": [r.wait_seconds for r in status.history],
        "decode_seconds": [r.decode_seconds for r in status.history],
        "step_seconds": [r.step_seconds for r in status.history],
        "config": asdict(JobConfig()) | {f.name: v for f, v in status.spec.ListFields()},
    }
