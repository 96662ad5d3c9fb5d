"""The ONLY package that converts between numpy/scipy objects and protobuf messages.

Every ``*_from_proto`` validates what it reads and raises :class:`~edgecode.errors.InvalidInput`
naming the field: an unknown dtype, a shape that does not match the byte length, a negative
dimension, non-finite values where finite ones are required, a malformed CSR structure. A bad
message therefore never reaches the model; the runtime maps InvalidInput to INVALID_ARGUMENT.

- :mod:`~edgecode.wire.tensors`: tensors and CSR matrices;
- :mod:`~edgecode.wire.gradient`: the zero-copy codec of the per-round gradient response;
- :mod:`~edgecode.wire.gossip`: gossip learning (a peer's job header, gossip values, round
  reports, the coordinator's gossip job spec and status);
- :mod:`~edgecode.wire.messages`: plans, timings, headers, job specs and statuses, matrix jobs,
  and the reader of "header first, then chunks" streams.
"""

from edgecode.wire.gossip import (
    gossip_params_from_proto,
    gossip_request,
    gossip_spec_from_proto,
    gossip_spec_to_proto,
    gossip_status_from_proto,
    gossip_status_to_proto,
    peer_header_from_proto,
    peer_header_to_proto,
    peer_reports_from_proto,
    peer_reports_to_proto,
    round_report_from_proto,
    round_report_to_proto,
)
from edgecode.wire.gradient import (
    GradientResponse,
    StreamAnswer,
    decode_gradient_response,
    encode_gradient_response,
    stream_answer,
)
from edgecode.wire.messages import (
    CHUNK_BYTES,
    STATES,
    block_header_from_proto,
    block_header_to_proto,
    job_config_from_proto,
    job_config_to_proto,
    job_status_to_proto,
    matmul_job_from_proto,
    matmul_job_to_proto,
    matmul_product_to_proto,
    matmul_spec_from_proto,
    partition_chunk_from_proto,
    partition_chunks,
    placement_header_from_proto,
    placement_header_to_proto,
    plan_from_proto,
    plan_to_proto,
    read_stream,
    timing_from_proto,
    timing_to_proto,
)
from edgecode.wire.tensors import (
    DTYPES,
    MAX_NDIM,
    csr_from_proto,
    csr_row_chunks,
    csr_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)

__all__ = [
    "CHUNK_BYTES",
    "DTYPES",
    "MAX_NDIM",
    "STATES",
    "GradientResponse",
    "StreamAnswer",
    "block_header_from_proto",
    "block_header_to_proto",
    "csr_from_proto",
    "csr_row_chunks",
    "csr_to_proto",
    "decode_gradient_response",
    "encode_gradient_response",
    "gossip_params_from_proto",
    "gossip_request",
    "gossip_spec_from_proto",
    "gossip_spec_to_proto",
    "gossip_status_from_proto",
    "gossip_status_to_proto",
    "job_config_from_proto",
    "job_config_to_proto",
    "job_status_to_proto",
    "matmul_job_from_proto",
    "matmul_job_to_proto",
    "matmul_product_to_proto",
    "matmul_spec_from_proto",
    "partition_chunk_from_proto",
    "partition_chunks",
    "peer_header_from_proto",
    "peer_header_to_proto",
    "peer_reports_from_proto",
    "peer_reports_to_proto",
    "placement_header_from_proto",
    "placement_header_to_proto",
    "plan_from_proto",
    "plan_to_proto",
    "read_stream",
    "round_report_from_proto",
    "round_report_to_proto",
    "stream_answer",
    "tensor_from_proto",
    "tensor_to_proto",
    "timing_from_proto",
    "timing_to_proto",
]
