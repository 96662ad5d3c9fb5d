"""The master's gRPC servicer (thin: decode the request, call the logic, encode)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from edgecode import wire
from edgecode.datapaths import DataDirs
from edgecode.errors import InvalidInput, UnknownJob
from edgecode.master.logic import MasterLogic
from edgecode.master.matrix import MatrixAssembler, MatrixMaster, load_matrix
from edgecode.runtime.errors import translate_errors, translate_stream_errors
from edgecode.v1 import master_pb2, master_pb2_grpc


class _MatmulUpload:
    """A streamed SubmitMatmul: the spec, then A's row chunks unless the spec names a file, then
    B's row chunks (A^T B jobs) unless the spec names B's file."""

    def __init__(self, spec: master_pb2.MatmulSpec) -> None:
        self.spec = spec
        self.assembler = (
            None
            if spec.matrix_path
            else MatrixAssembler(int(spec.rows), int(spec.cols), int(spec.nnz))
        )
        self.rhs = (
            MatrixAssembler(int(spec.rhs_rows), int(spec.rhs_cols), int(spec.rhs_nnz), "rhs")
            if spec.rhs_cols and not spec.rhs_path
            else None
        )

    def add(self, message: master_pb2.SubmitMatmulRequest) -> None:
        if message.HasField("rhs_chunk"):
            if self.rhs is None:
                raise InvalidInput("matmul: B chunks sent without rhs_cols (or with a rhs_path)")
            chunk = message.rhs_chunk
            self.rhs.add(int(chunk.first_row), wire.csr_from_proto(chunk.rows, "B rows"))
            return
        if self.assembler is None:
            raise InvalidInput("matmul: matrix chunks sent with a matrix_path")
        if self.rhs is not None and self.rhs.next_row:
            raise InvalidInput("matmul: a chunk of A arrived after B's chunks began")
        rows = wire.csr_from_proto(message.chunk.rows, f"A rows {message.chunk.first_row}")
        self.assembler.add(int(message.chunk.first_row), rows)

    def matrices(self, data_dirs: DataDirs | None = None) -> tuple[Any, Any]:
        """A and B (None for an A^T x job), read or assembled and checked; a file must lie in
        ``data_dirs`` (when given), checked before anything opens it."""
        spec = self.spec

        def confined(path: str, what: str) -> str:
            return path if data_dirs is None else str(data_dirs.confine(path, what))

        a = (
            load_matrix(confined(spec.matrix_path, "matrix_path"))
            if self.assembler is None
            else self.assembler.finish()
        )
        if spec.rhs_path:
            return a, load_matrix(confined(spec.rhs_path, "rhs_path"), "rhs", csr_only=True)
        return a, None if self.rhs is None else self.rhs.finish()


@dataclass
class MasterServicer(master_pb2_grpc.MasterServicer):
    """Master RPCs: the training job API and the matrix job API."""

    logic: MasterLogic
    #: matrix jobs; None = this master serves training only
    matrix: MatrixMaster | None = None
    #: folders a matrix_path or rhs_path may name (None: not confined, for in-process use; run()
    #: confines)
    data_dirs: DataDirs | None = None

    def _matrix(self) -> MatrixMaster:
        if self.matrix is None:
            raise UnknownJob("this master does not serve matrix jobs")
        return self.matrix

    @translate_errors
    def SubmitJob(
        self, request: master_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> master_pb2.SubmitJobResponse:
        job_id = self.logic.submit(wire.job_config_from_proto(request.spec))
        return master_pb2.SubmitJobResponse(job_id=job_id)

    @translate_errors
    def GetJob(
        self, request: master_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> master_pb2.JobStatus:
        job = self.logic.job(request.job_id)
        return wire.job_status_to_proto(job.status(request.include_params), request.include_params)

    @translate_stream_errors
    def WatchJob(
        self, request: master_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[master_pb2.JobStatus]:
        sent = 0
        for job in self.logic.watch(request.job_id, context.is_active):
            status = job.status(request.include_params)
            yield wire.job_status_to_proto(status, request.include_params, sent)
            if request.history_delta:
                sent = len(status.history)

    @translate_errors
    def CancelJob(
        self, request: master_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> master_pb2.JobStatus:
        return wire.job_status_to_proto(self.logic.cancel(request.job_id).status())

    @translate_errors
    def SubmitMatmul(
        self,
        request_iterator: Iterator[master_pb2.SubmitMatmulRequest],
        context: grpc.ServicerContext,
    ) -> master_pb2.MatmulJob:
        matrix = self._matrix()
        upload, _received = wire.read_stream(
            request_iterator,
            "matmul",
            _MatmulUpload,
            _MatmulUpload.add,
            context.is_active,
            header="spec",
            chunk=None,
        )
        spec = wire.matmul_spec_from_proto(upload.spec).validated()
        a, b = upload.matrices(self.data_dirs)
        return wire.matmul_job_to_proto(matrix.submit(spec, a, b).status())

    @translate_errors
    def Matmul(
        self, request: master_pb2.MatmulRequest, context: grpc.ServicerContext
    ) -> master_pb2.MatmulResponse:
        operand = None
        if request.HasField("operand"):  # unset: an A^T B job multiplies its placed B
            operand = wire.tensor_from_proto(request.operand, "operand", dtype="float64")
        return wire.matmul_product_to_proto(self._matrix().multiply(request.job_id, operand))

    @translate_errors
    def GetMatmul(
        self, request: master_pb2.GetMatmulRequest, context: grpc.ServicerContext
    ) -> master_pb2.MatmulJob:
        if request.check_health:
            job = self._matrix().check(request.job_id)
        else:
            job = self._matrix().job(request.job_id)
        return wire.matmul_job_to_proto(job.status())

    @translate_errors
    def DropMatmul(
        self, request: master_pb2.DropMatmulRequest, context: grpc.ServicerContext
    ) -> master_pb2.MatmulJob:
        return wire.matmul_job_to_proto(self._matrix().drop(request.job_id).status())
