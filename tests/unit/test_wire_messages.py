"""Records on the wire (edgecode.wire.messages), fast: every field of every record survives a
round trip with a distinct non-default value (a dropped or swapped field shows), the defaults
that stand for unset fields, every refusal with its message, the exact chunking of partitions,
and the "header first, then chunks" reader. The Hypothesis round trips over random records are
in tests/property/test_wire_roundtrip.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields, replace
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.errors import InvalidInput
from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
from edgecode.records import (
    BlockHeader,
    JobConfig,
    JobStatus,
    MatmulJobStatus,
    MatmulProduct,
    PlacementHeader,
    RoundRecord,
    Timing,
)
from edgecode.v1 import common_pb2, coordinator_pb2, master_pb2, worker_pb2
from edgecode.wire.messages import (
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
from edgecode.wire.tensors import csr_to_proto, tensor_from_proto, tensor_to_proto

DEFAULTS = JobConfig()


def wire_trip(message: Any) -> Any:
    """The message as the other side parses it."""
    return type(message).FromString(message.SerializeToString())


# ---- plans and timings -------------------------------------------------------------------------


def plan(expected: float | None = 2.5) -> Plan:
    return Plan(
        scheme="hgc",
        partitions=12,
        s_edge=1,
        expected_round_seconds=expected,
        edges=(
            EdgePlan(
                "edge-a",
                s_worker=1,
                link_seconds=0.125,
                partitions=6,
                workers=(WorkerPlan("a-1", True, 4), WorkerPlan("a-2", False, 0)),
            ),
            EdgePlan("edge-b", 2, 0.5, 7, (WorkerPlan("b-1", True, 7),)),
        ),
    )


def test_plans_round_trip_with_every_field() -> None:
    message = wire_trip(plan_to_proto(plan(), fitted=False, current_seconds=3.75))
    assert message.fitted is False and message.current_expected_round_seconds == 3.75
    back = plan_from_proto(message)
    assert back == plan() and back.scheme == "hgc"
    assert back.extra == {"current_seconds": 3.75}


def test_any_positive_current_time_is_reported() -> None:
    back = plan_from_proto(plan_to_proto(plan(), current_seconds=0.5))
    assert back.extra == {"current_seconds": 0.5}


def test_plan_defaults_fitted_no_current_time_and_no_expected_time() -> None:
    message = wire_trip(plan_to_proto(plan(expected=None)))
    assert message.fitted is True and message.current_expected_round_seconds == 0.0
    assert message.expected_round_seconds == 0.0
    back = plan_from_proto(message)
    assert back.expected_round_seconds is None and back.extra == {}


@pytest.mark.parametrize(("partitions", "s_edge"), [(0, 0), (1, -1), (-5, 3)])
def test_impossible_plans_are_refused(partitions: int, s_edge: int) -> None:
    message = coordinator_pb2.PlanResponse(partitions=partitions, s_edge=s_edge)
    with pytest.raises(
        InvalidInput, match=rf"^plan: partitions {partitions} / s_edge {s_edge} invalid$"
    ):
        plan_from_proto(message)


def test_the_smallest_plan_is_accepted() -> None:
    back = plan_from_proto(coordinator_pb2.PlanResponse(partitions=1, s_edge=0))
    assert (back.partitions, back.s_edge, back.edges) == (1, 0, ())


def test_timings_round_trip_and_the_edge_that_saw_them() -> None:
    timing = Timing("w-1", 0.5, True, 0.25, 0.125, "edge-x", "slow")
    message = wire_trip(timing_to_proto(timing))
    assert timing_from_proto(message) == timing
    assert timing_from_proto(message, edge="other") == timing  # its own edge wins
    direct = wire_trip(timing_to_proto(Timing("w-2", 1.0, False)))
    assert timing_from_proto(direct, edge="edge-y") == Timing("w-2", 1.0, False, edge="edge-y")
    assert timing_from_proto(direct) == Timing("w-2", 1.0, False)
    zeros = timing_from_proto(common_pb2.NodeTiming(node="z"))
    assert zeros == Timing("z", 0.0, False)  # 0 is a valid number of seconds


@pytest.mark.parametrize("field", ["seconds", "compute_seconds", "load_fraction"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1e-300])
def test_bad_timing_numbers_are_refused_naming_the_field(field: str, value: float) -> None:
    message = common_pb2.NodeTiming(node="w", **{field: value})
    with pytest.raises(
        InvalidInput, match=rf"^timing\.{field} must be a finite number >= 0, got {value}$"
    ):
        timing_from_proto(message)


# ---- placement ---------------------------------------------------------------------------------


def test_placement_headers_round_trip_with_every_field() -> None:
    header = PlacementHeader(
        job_id="job-1",
        model="logistic",
        n_features=7,
        n_classes=3,
        partitions=(4, 1, 9),
        coefficients=(0.5, -1.25, 2.0),
        l2=0.01,
        n_partitions=12,
        epoch=5,
        rows=(10, 11, 12),
        groups=(0, 1, 1),
    )
    back = placement_header_from_proto(wire_trip(placement_header_to_proto(header)))
    assert back == header
    assert all(type(j) is int for j in back.partitions + back.rows + back.groups)
    assert all(type(c) is float for c in back.coefficients)


def read_chunks(chunks: list[worker_pb2.PartitionChunk]) -> list[tuple[int, Any, np.ndarray]]:
    return [partition_chunk_from_proto(wire_trip(c)) for c in chunks]


@pytest.mark.parametrize(
    ("rows", "chunk_bytes", "sizes"),
    [
        (10, 64, [2, 2, 2, 2, 2]),  # 3 columns: 3 * 8 + 8 = 32 bytes a row
        (10, 95, [2, 2, 2, 2, 2]),
        (10, 96, [3, 3, 3, 1]),
        (5, 31, [1, 1, 1, 1, 1]),  # not even one row fits: one row a chunk
        (5, 10**6, [5]),
        (0, 64, [0]),  # an empty partition still sends its (empty) chunk
    ],
)
def test_dense_partitions_are_cut_into_equal_row_ranges(
    rows: int, chunk_bytes: int, sizes: list[int]
) -> None:
    features = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)  # int features: sent as float64
    labels = np.arange(rows, dtype=np.int64) % 2
    read = read_chunks(list(partition_chunks(4, features, labels, chunk_bytes)))
    assert [x.shape[0] for _, x, _ in read] == sizes
    assert all(p == 4 and x.dtype == np.float64 and x.shape[1] == 3 for p, x, _ in read)
    assert np.array_equal(np.vstack([x for _, x, _ in read]), features)
    assert all(y.dtype == np.int64 for _, _, y in read)
    assert np.array_equal(np.concatenate([y for _, _, y in read]), labels)


@pytest.mark.parametrize(
    ("chunk_bytes", "sizes"),
    [(96, [2, 2, 2]), (95, [1] * 6), (144, [3, 3]), (47, [1] * 6), (480, [6])],
)
def test_sparse_partitions_stay_csr_and_count_their_nonzeros(
    chunk_bytes: int, sizes: list[int]
) -> None:
    # 6 rows, 12 nonzeros: 12 * 16 // 6 + 16 = 48 bytes a row (64 if it were dense: 7 * 8 + 8)
    dense = np.zeros((6, 7))
    dense[np.arange(6), np.arange(6)] = np.arange(1.0, 7.0)
    dense[np.arange(6), np.arange(6) + 1] = -np.arange(1.0, 7.0)
    features = sp.csr_matrix(dense)
    labels = np.arange(6.0)
    chunks = list(partition_chunks(2, features, labels, chunk_bytes))
    assert all(c.HasField("sparse") and not c.HasField("dense") for c in chunks)
    read = read_chunks(chunks)
    assert [x.shape[0] for _, x, _ in read] == sizes
    assert all(sp.issparse(x) for _, x, _ in read)
    assert np.array_equal(sp.vstack([x for _, x, _ in read]).toarray(), dense)
    assert np.array_equal(np.concatenate([y for _, _, y in read]), labels)


def test_an_empty_sparse_partition_sends_one_empty_chunk() -> None:
    (chunk,) = partition_chunks(0, sp.csr_matrix((0, 4)), np.zeros(0), 1)
    _, features, labels = partition_chunk_from_proto(chunk)
    assert features.shape == (0, 4) and sp.issparse(features) and labels.shape == (0,)


def test_chunks_stay_under_one_mebibyte_by_default() -> None:
    # 127 columns: 127 * 8 + 8 = 1024 bytes a row, so 1024 rows fill a chunk of 1 MiB
    features = np.zeros((1025, 127))
    chunks = list(partition_chunks(0, features, np.zeros(1025)))
    assert [partition_chunk_from_proto(c)[1].shape[0] for c in chunks] == [1024, 1]


def test_chunk_refusals_name_the_partition() -> None:
    chunk = worker_pb2.PartitionChunk(partition=3, labels=tensor_to_proto(np.zeros(2)))
    with pytest.raises(InvalidInput, match=r"^placement: chunk of partition 3 has no features$"):
        partition_chunk_from_proto(chunk)
    chunk.dense.CopyFrom(tensor_to_proto(np.zeros((2, 2), dtype=np.float32)))
    with pytest.raises(
        InvalidInput, match=r"^partition 3 features: expected dtype float64, got float32$"
    ):
        partition_chunk_from_proto(chunk)
    chunk.dense.CopyFrom(tensor_to_proto(np.array([[0.0, np.nan]])))
    with pytest.raises(InvalidInput, match=r"^partition 3 features: contains NaN"):
        partition_chunk_from_proto(chunk)
    bad_csr = csr_to_proto(sp.csr_matrix(np.eye(2)))
    bad_csr.cols = 1
    chunk.sparse.CopyFrom(bad_csr)
    with pytest.raises(InvalidInput, match=r"^partition 3 features: column index out of range"):
        partition_chunk_from_proto(chunk)
    chunk.sparse.CopyFrom(csr_to_proto(sp.csr_matrix(np.eye(2))))
    chunk.labels.CopyFrom(tensor_to_proto(np.zeros((2, 1))))
    with pytest.raises(InvalidInput, match=r"^partition 3 labels: expected shape \[None\]"):
        partition_chunk_from_proto(chunk)
    chunk.labels.CopyFrom(tensor_to_proto(np.array([0.0, np.inf])))
    with pytest.raises(InvalidInput, match=r"^partition 3 labels: contains NaN"):
        partition_chunk_from_proto(chunk)


# ---- matrix blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["a", "b"])
def test_block_headers_round_trip_with_every_field(side: str) -> None:
    header = BlockHeader("m-1", 3, 40, 7, 55, 2, 0.375, side)
    assert block_header_from_proto(wire_trip(block_header_to_proto(header))) == header


def test_a_block_header_without_a_side_is_for_a() -> None:
    assert block_header_from_proto(worker_pb2.BlockHeader(job_id="m")).side == "a"


# ---- training jobs -----------------------------------------------------------------------------


def every_field_changed() -> JobConfig:
    """A config whose every field differs from the default and from every other field."""
    values: dict[str, Any] = {}
    for index, f in enumerate(fields(JobConfig)):
        default = getattr(DEFAULTS, f.name)
        if isinstance(default, bool):
            values[f.name] = not default
        elif isinstance(default, int):
            values[f.name] = 1000 + index
        elif isinstance(default, float):
            values[f.name] = 1000.5 + index
        else:
            values[f.name] = f"{f.name}-value"
    return JobConfig(**values)


def test_job_configs_round_trip_with_every_field() -> None:
    config = every_field_changed()
    assert job_config_from_proto(wire_trip(job_config_to_proto(config))) == config


def test_unset_job_fields_take_the_defaults_but_explicit_zeros_stay() -> None:
    assert job_config_from_proto(master_pb2.JobSpec()) == DEFAULTS
    zeros = {
        f.name: type(getattr(DEFAULTS, f.name))()
        for f in fields(JobConfig)
        if not isinstance(getattr(DEFAULTS, f.name), str)
    }
    config = job_config_from_proto(wire_trip(master_pb2.JobSpec(**zeros)))
    assert config == replace(DEFAULTS, **zeros)
    assert config.rounds == 0 and config.round_deadline_seconds == 0.0 and config.s_edge == 0
    # strings have no presence: empty means the default
    empty = job_config_from_proto(master_pb2.JobSpec(scheme="", dataset="", optimizer=""))
    assert (empty.scheme, empty.dataset, empty.optimizer) == ("hgc", "breast_cancer", "nesterov")


def job_status(params: np.ndarray | None) -> JobStatus:
    return JobStatus(
        job_id="job-9",
        state="failed",
        config=every_field_changed(),
        round=17,
        message="worker gone",
        history=(RoundRecord(1, 0.5, 2.0, 1, 0.75, 0.5, 0.25, 0.1, 0.2, 0.3, 0.4),),
        accuracy=0.875,
        predicted_round_seconds=1.25,
        plan_json='{"s_edge": 1}',
        last_timings=(Timing("w-1", 0.5, True, 0.25, 0.125, "edge-x", ""),),
        placements=3,
        setup_seconds=4.5,
        placement_seconds=5.5,
        partition_usage=(1.0, 0.5),
        shuffle_bytes=1234,
        shuffles=6,
        inconsistent_rounds=2,
        quarantined=("w-7",),
        params=params,
        param_history=(np.array([1.0, 2.0]), np.array([3.0, 4.0])),
    )


def test_job_statuses_carry_every_field() -> None:
    status = job_status(np.array([0.5, -0.5]))
    message = wire_trip(job_status_to_proto(status))
    assert message.state == master_pb2.JOB_STATE_FAILED and message.rounds == 1000 + [
        f.name for f in fields(JobConfig)
    ].index("rounds")
    assert (message.job_id, message.round, message.message) == ("job-9", 17, "worker gone")
    assert (message.accuracy, message.predicted_round_seconds) == (0.875, 1.25)
    assert (message.plan_json, message.placements) == ('{"s_edge": 1}', 3)
    assert (message.setup_seconds, message.placement_seconds) == (4.5, 5.5)
    assert list(message.partition_usage) == [1.0, 0.5]
    assert (message.shuffle_bytes, message.shuffles, message.inconsistent_rounds) == (1234, 6, 2)
    assert list(message.quarantined) == ["w-7"]
    assert [RoundRecord(**{f.name: getattr(r, f.name) for f in fields(RoundRecord)}) for r in message.history] == list(status.history)  # fmt: skip
    assert [timing_from_proto(t) for t in message.last_timings] == list(status.last_timings)
    assert job_config_from_proto(message.spec) == status.config
    # parameters only when asked for
    assert not message.HasField("params") and len(message.param_history) == 0
    full = wire_trip(job_status_to_proto(status, include_params=True))
    assert np.array_equal(tensor_from_proto(full.params, "p"), [0.5, -0.5])
    assert [list(tensor_from_proto(p, "p")) for p in full.param_history] == [[1, 2], [3, 4]]
    none = wire_trip(job_status_to_proto(job_status(None), include_params=True))
    assert not none.HasField("params") and len(none.param_history) == 0


def test_every_job_state_has_its_own_wire_value() -> None:
    assert STATES == {
        "pending": master_pb2.JOB_STATE_PENDING,
        "running": master_pb2.JOB_STATE_RUNNING,
        "succeeded": master_pb2.JOB_STATE_SUCCEEDED,
        "failed": master_pb2.JOB_STATE_FAILED,
        "cancelled": master_pb2.JOB_STATE_CANCELLED,
    }
    assert len(set(STATES.values())) == 5


# ---- matrix jobs -------------------------------------------------------------------------------


def test_matmul_specs_keep_every_field_and_default_scheme_and_k_b() -> None:
    message = master_pb2.MatmulSpec(
        scheme="poly",
        n=9,
        k=3,
        seed=11,
        deadline_seconds=2.5,
        job_id="mm-1",
        workers=["h:1", "h:2"],
        k_b=2,
    )
    spec = matmul_spec_from_proto(wire_trip(message))
    assert (spec.scheme, spec.n, spec.k, spec.seed, spec.k_b) == ("poly", 9, 3, 11, 2)
    assert (spec.deadline_seconds, spec.job_id, spec.workers) == (2.5, "mm-1", ("h:1", "h:2"))
    empty = matmul_spec_from_proto(master_pb2.MatmulSpec())
    assert (empty.scheme, empty.n, empty.k, empty.k_b, empty.workers) == ("sparse", 0, 0, 1, ())


def matmul_job(state: str) -> MatmulJobStatus:
    return MatmulJobStatus(
        job_id="mm-2",
        scheme="sparse",
        n=8,
        k=4,
        rows=100,
        cols=60,
        worst_condition=12.5,
        block_nnz=(5, 6),
        block_bytes=(50, 60),
        encode_seconds=0.25,
        place_seconds=0.75,
        products=3,
        k_b=2,
        rhs_cols=9,
        weight=(3, 4),
        weight_bound=11,
        rhs_block_nnz=(7, 8),
        rhs_block_bytes=(70, 80),
        state=state,
        message="ok",
        tolerance=13,
        node_tolerance=14,
        workers=("h:1", "h:2"),
        epoch=15,
        replacements=16,
        replaced_bytes=17,
    )


@pytest.mark.parametrize("state", ["pending", "running", "succeeded", "failed", "cancelled"])
def test_matmul_jobs_round_trip_with_every_field(state: str) -> None:
    job = matmul_job(state)
    message = wire_trip(matmul_job_to_proto(job))
    assert message.state == STATES[state] and (message.weight_a, message.weight_b) == (3, 4)
    assert matmul_job_from_proto(message) == job


def test_an_unknown_matmul_state_reads_as_pending() -> None:
    message = matmul_job_to_proto(matmul_job("running"))
    message.state = 99
    assert matmul_job_from_proto(wire_trip(message)).state == "pending"


def test_matmul_products_carry_every_field() -> None:
    product = MatmulProduct(
        job_id="mm-3",
        sequence=4,
        value=np.arange(6.0).reshape(3, 2),
        seconds=0.5,
        decoded_from=(0, 2, 3),
        timings=(Timing("0", 0.25, True), Timing("1", 0.75, False, error="late")),
        replaced=(1,),
    )
    message = wire_trip(matmul_product_to_proto(product))
    assert (message.job_id, message.sequence, message.seconds) == ("mm-3", 4, 0.5)
    assert list(message.decoded_from) == [0, 2, 3] and list(message.replaced) == [1]
    assert [timing_from_proto(t) for t in message.timings] == list(product.timings)
    assert np.array_equal(tensor_from_proto(message.product, "p"), product.value)


# ---- the "header first, then chunks" reader ----------------------------------------------------

HEADER = worker_pb2.PlaceDataRequest(
    header=placement_header_to_proto(PlacementHeader("j", "m", 2, 1, (0,), (1.0,), 0.0, 1, 1))
)


def chunk(partition: int) -> worker_pb2.PlaceDataRequest:
    (body,) = partition_chunks(partition, np.ones((1, 2)), np.ones(1))
    return worker_pb2.PlaceDataRequest(chunk=body)


def read(messages: list[Any], active: bool = True, **names: Any) -> tuple[list[Any], int]:
    def begin(header: Any) -> list[Any]:
        return [("header", header.job_id)]

    def add(builder: list[Any], body: Any) -> None:
        builder.append(body.partition)

    return read_stream(iter(messages), "placement", begin, add, lambda: active, **names)


def test_a_stream_is_read_header_first_then_every_chunk_in_order() -> None:
    messages = [HEADER, chunk(3), chunk(1), chunk(2)]
    builder, received = read(messages)
    assert builder == [("header", "j"), 3, 1, 2]
    assert received == sum(m.ByteSize() for m in messages) and received > HEADER.ByteSize()
    assert read([HEADER]) == ([("header", "j")], HEADER.ByteSize())


@pytest.mark.parametrize(
    ("messages", "active", "match"),
    [
        ([], True, r"^placement: empty stream$"),
        ([chunk(0), HEADER], True, r"^placement: the first message must be the header$"),
        ([HEADER, chunk(0), HEADER], True, r"^placement: a second header arrived$"),
        ([HEADER, HEADER], True, r"^placement: a second header arrived$"),
        ([HEADER, chunk(0)], False, r"^placement: the call ended before it completed$"),
        ([], False, r"^placement: empty stream$"),
    ],
)
def test_incomplete_streams_are_refused(messages: list[Any], active: bool, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        read(messages, active)


def test_whole_messages_and_other_field_names() -> None:
    header = worker_pb2.BlockHeader(job_id="m", rows=2, cols=1, nnz=2)
    rows = csr_to_proto(sp.csr_matrix(np.ones((1, 1))))
    messages = [
        worker_pb2.PlaceBlockRequest(header=header),
        worker_pb2.PlaceBlockRequest(chunk=worker_pb2.BlockChunk(first_row=1, rows=rows)),
    ]
    seen: list[Any] = []
    builder, _ = read_stream(
        messages, "block", block_header_from_proto, lambda b, m: seen.append(m), lambda: True,
        chunk=None,
    )  # fmt: skip
    assert builder == block_header_from_proto(header)
    assert seen == [messages[1]]  # chunk=None: the whole message
    status = master_pb2.JobStatus(job_id="s")
    with pytest.raises(InvalidInput, match=r"^statuses: the first message must be the spec$"):
        read_stream([status], "statuses", list, list.append, lambda: True, header="spec")
    begun, _ = read_stream(
        [master_pb2.JobStatus(spec=master_pb2.JobSpec(scheme="flat")), status],
        "statuses",
        lambda spec: [spec.scheme],
        list.append,
        lambda: True,
        header="spec",
        chunk="job_id",
    )
    assert begun == ["flat", "s"]


def test_asdict_of_a_config_is_what_the_wire_carries() -> None:
    message = job_config_to_proto(every_field_changed())
    assert {f.name: getattr(message, f.name) for f in fields(JobConfig)} == asdict(
        every_field_changed()
    )
