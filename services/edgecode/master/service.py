"""The master's gRPC servicer (thin: decode the request, call the logic, encode)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from edgecode import wire
from edgecode.datapaths import DataDirs
from edgecode.errors import InvalidInput, UnknownJob
from edgecode.master.logic import MasterLogic
from edgecode.master.matrix import MatrixAssembler, MatrixMaster, load_matrix
from edgecode.runtime.errors import translate_errors, translate_stream_errors
from edgecode.v1 import master_pb2, master_pb2_grpc


class _MatmulUpload:
    """A streamed SubmitMatmul: the spec, then A's row chunks unless the spec names a file."""

    def __init__(self, spec: master_pb2.MatmulSpec) -> None:
        self.spec = spec
        self.assembler = (
            None
            if spec.matrix_path
            else MatrixAssembler(int(spec.rows), int(spec.cols), int(spec.nnz))
        )

    def add(self, chunk: master_pb2.MatrixChunk) -> None:
        if self.assembler is None:
            raise InvalidInput("matmul: matrix chunks sent with a matrix_path")
        rows = wire.csr_from_proto(chunk.rows, f"A rows {chunk.first_row}")
        self.assembler.add(int(chunk.first_row), rows)


@dataclass
class MasterServicer(master_pb2_grpc.MasterServicer):
    """Master RPCs: the training job API and the matrix job API."""

    logic: MasterLogic
    #: matrix jobs; None = this master serves training only
    matrix: MatrixMaster | None = None
    #: folders a matrix_path may name (None: not confined, for in-process use; run() confines)
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
        for job in self.logic.watch(request.job_id, context.is_active):
            status = job.status(request.include_params)
            yield wire.job_status_to_proto(status, request.include_params)

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
        )
        spec = wire.matmul_spec_from_proto(upload.spec).validated()
        if upload.assembler is None:
            path = upload.spec.matrix_path
            if self.data_dirs is not None:
                path = str(self.data_dirs.confine(path, "matrix_path"))
            a = load_matrix(path)
        else:
            a = upload.assembler.finish()
        return wire.matmul_job_to_proto(matrix.submit(spec, a).status())

    @translate_errors
    def Matmul(
        self, request: master_pb2.MatmulRequest, context: grpc.ServicerContext
    ) -> master_pb2.MatmulResponse:
        operand = wire.tensor_from_proto(request.operand, "operand", dtype="float64")
        return wire.matmul_product_to_proto(self._matrix().multiply(request.job_id, operand))

    @translate_errors
    def DropMatmul(
        self, request: master_pb2.DropMatmulRequest, context: grpc.ServicerContext
    ) -> master_pb2.MatmulJob:
        return wire.matmul_job_to_proto(self._matrix().drop(request.job_id).status())
