"""Every conversion of edgecode.wire round-trips (through serialized bytes, as on the wire), and
every reader refuses what it must refuse with InvalidInput naming the field.

Tensors, CSR matrices and their row chunks, plans, timings, placement and block headers, job
configs (proto3 optional presence: an explicit 0 stays 0, an absent field takes the default),
job statuses, matrix specs / jobs / products, partition chunks (dense and sparse: chunking splits
the rows exactly) and the one "header first, then chunks" stream reader.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields, replace
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
from edgecode.records import (
    FINAL,
    PENDING,
    RUNNING,
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

SETTINGS = settings(max_examples=40, deadline=None)

int64s = st.integers(-(2**63), 2**63 - 1)
small = st.integers(0, 10**6)
finite = st.floats(allow_nan=False, allow_infinity=False)
nonnegative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
names = st.text(max_size=12)


def wire_trip(message: Any) -> Any:
    """The message after serialization, as the other side parses it."""
    return type(message).FromString(message.SerializeToString())


# ---- tensors -----------------------------------------------------------------------------------

DTYPE_NAMES = sorted(wire.DTYPES)
shapes = array_shapes(min_dims=0, max_dims=wire.MAX_NDIM, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn, allow_nonfinite: bool = False) -> np.ndarray:
    name = draw(st.sampled_from(DTYPE_NAMES))
    order = draw(st.sampled_from(["<", ">"]))  # big-endian input is converted, not refused
    dtype = np.dtype(name).newbyteorder(order)
    if dtype.kind == "f":
        elements = st.floats(
            width=64 if dtype.itemsize == 8 else 32,
            allow_nan=allow_nonfinite,
            allow_infinity=allow_nonfinite,
        )
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    array = draw(arrays(dtype, draw(shapes), elements=elements))
    if draw(st.booleans()) and array.ndim >= 2:
        array = array.T  # not C-contiguous
    return array


@SETTINGS
@given(array=tensors())
def test_tensor_round_trip(array: np.ndarray) -> None:
    message = wire_trip(wire.tensor_to_proto(array))
    back = wire.tensor_from_proto(message, "t", dtype=array.dtype.name, shape=list(array.shape))
    assert back.dtype == wire.DTYPES[array.dtype.name] and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable
    into = master_pb2.JobStatus()
    wire.tensor_to_proto(array, out=into.params)  # filling a field in place gives the same bytes
    assert into.params.SerializeToString() == wire.tensor_to_proto(array).SerializeToString()


@SETTINGS
@given(array=tensors(allow_nonfinite=True))
def test_non_finite_tensors_are_refused_unless_allowed(array: np.ndarray) -> None:
    message = wire_trip(wire.tensor_to_proto(array))
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        with pytest.raises(InvalidInput, match="t: contains NaN or infinite values"):
            wire.tensor_from_proto(message, "t")
    back = wire.tensor_from_proto(message, "t", finite=False)
    np.testing.assert_array_equal(back, array)  # NaN positions compare equal here


@SETTINGS
@given(array=tensors(), extra=st.integers(1, 9))
def test_bad_tensors_are_refused_naming_the_field(array: np.ndarray, extra: int) -> None:
    message = wire.tensor_to_proto(array)
    short = common_pb2.Tensor()
    short.CopyFrom(message)
    short.data = message.data + b"\0" * extra
    with pytest.raises(InvalidInput, match=r"^vec: shape .* needs \d+ bytes, got \d+"):
        wire.tensor_from_proto(short, "vec")
    unknown = common_pb2.Tensor(dtype="complex128", shape=list(array.shape), data=message.data)
    with pytest.raises(InvalidInput, match=r"^vec: dtype 'complex128' is not one of"):
        wire.tensor_from_proto(unknown, "vec")
    other = "int32" if array.dtype.name != "int32" else "int64"
    with pytest.raises(InvalidInput, match=f"^vec: expected dtype {other}"):
        wire.tensor_from_proto(message, "vec", dtype=other)
    with pytest.raises(InvalidInput, match=r"^vec: expected shape"):
        wire.tensor_from_proto(message, "vec", shape=[*array.shape, 1])


def test_tensor_dimension_limits() -> None:
    too_deep = common_pb2.Tensor(dtype="float64", shape=[1] * (wire.MAX_NDIM + 1), data=bytes(8))
    with pytest.raises(InvalidInput, match="invalid shape"):
        wire.tensor_from_proto(too_deep, "x")
    negative = common_pb2.Tensor(dtype="float64", shape=[-1], data=b"")
    with pytest.raises(InvalidInput, match="invalid shape"):
        wire.tensor_from_proto(negative, "x")
    with pytest.raises(InvalidInput, match="tensor dtype complex128"):
        wire.tensor_to_proto(np.zeros(2, dtype=np.complex128))


# ---- CSR ---------------------------------------------------------------------------------------


@st.composite
def csr_matrices(draw: st.DrawFn) -> sp.csr_matrix:
    rows, cols = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    density = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    matrix = sp.random(rows, cols, density=density, format="csr", random_state=seed)
    if draw(st.booleans()) and matrix.nnz:  # an explicitly stored zero survives the trip
        matrix.data[0] = 0.0
    return sp.csr_matrix(matrix)


@SETTINGS
@given(matrix=csr_matrices())
def test_csr_round_trip(matrix: sp.csr_matrix) -> None:
    back = wire.csr_from_proto(wire_trip(wire.csr_to_proto(matrix)), "A")
    assert back.shape == matrix.shape
    np.testing.assert_array_equal(back.indptr, matrix.indptr)
    np.testing.assert_array_equal(back.indices, matrix.indices)
    np.testing.assert_array_equal(back.data, matrix.data)
    back.data[:] = 1.0  # the result owns its buffers (copies): it can be written


@SETTINGS
@given(matrix=csr_matrices(), chunk_bytes=st.integers(1, 400))
def test_csr_row_chunks_cover_every_row_once_in_order(
    matrix: sp.csr_matrix, chunk_bytes: int
) -> None:
    chunks = list(wire.csr_row_chunks(matrix, chunk_bytes))
    starts = [start for start, _ in chunks]
    sizes = [int(rows.shape[0]) for _, rows in chunks]
    assert starts == [sum(sizes[:i]) for i in range(len(sizes))]
    assert sum(sizes) == matrix.shape[0] and all(size >= 1 for size in sizes)
    if chunks:
        joined = sp.vstack([rows for _, rows in chunks], format="csr")
        assert joined.shape == matrix.shape and (joined != matrix).nnz == 0


def _csr_message(rows: int, cols: int, indptr: list[int], indices: list[int]) -> Any:
    return common_pb2.CsrMatrix(
        rows=rows,
        cols=cols,
        indptr=wire.tensor_to_proto(np.array(indptr, dtype=np.int64)),
        indices=wire.tensor_to_proto(np.array(indices, dtype=np.int64)),
        data=wire.tensor_to_proto(np.ones(len(indices))),
    )


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (_csr_message(-1, 2, [0], []), r"A: invalid shape \(-1, 2\)"),
        (_csr_message(2, 2, [1, 1, 2], [0, 1]), "malformed CSR structure"),
        (_csr_message(2, 2, [0, 2, 1], [0, 1]), "malformed CSR structure"),
        (_csr_message(2, 2, [0, 1, 3], [0, 1]), "malformed CSR structure"),
        (_csr_message(2, 2, [0, 1, 2], [0, 2]), r"column index out of range \[0, 2\)"),
        (_csr_message(2, 2, [0, 1, 2], [-1, 0]), "column index out of range"),
        (_csr_message(2, 2, [0, 1], [0]), r"A.indptr: expected shape \[3\]"),
    ],
)
def test_malformed_csr_is_refused(message: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        wire.csr_from_proto(message, "A")


def test_non_finite_csr_values_are_refused() -> None:
    matrix = sp.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(InvalidInput, match=r"A\.data: contains NaN"):
        wire.csr_from_proto(wire.csr_to_proto(matrix), "A")


# ---- plans and timings -------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    edges = []
    for _ in range(draw(st.integers(0, 4))):
        workers = tuple(
            WorkerPlan(draw(names), draw(st.booleans()), draw(small))
            for _ in range(draw(st.integers(0, 4)))
        )
        edges.append(EdgePlan(draw(names), draw(small), draw(nonnegative), draw(small), workers))
    expected = draw(st.one_of(st.none(), st.floats(min_value=1e-9, max_value=1e9)))
    return Plan(
        "hgc",
        draw(st.integers(1, 10**6)),
        draw(small),
        tuple(edges),
        expected_round_seconds=expected,
    )


@SETTINGS
@given(plan=plans(), fitted=st.booleans())
def test_plan_round_trip(plan: Plan, fitted: bool) -> None:
    message = wire_trip(wire.plan_to_proto(plan, fitted=fitted))
    assert message.fitted == fitted
    assert wire.plan_from_proto(message) == plan
    assert message.expected_round_seconds == (plan.expected_round_seconds or 0.0)


@pytest.mark.parametrize(("partitions", "s_edge"), [(0, 0), (-3, 0), (4, -1)])
def test_impossible_plans_are_refused(partitions: int, s_edge: int) -> None:
    message = coordinator_pb2.PlanResponse(partitions=partitions, s_edge=s_edge)
    with pytest.raises(InvalidInput, match="plan: partitions"):
        wire.plan_from_proto(message)


timings = st.builds(
    Timing,
    node=names,
    seconds=nonnegative,
    arrived=st.booleans(),
    compute_seconds=nonnegative,
    load_fraction=nonnegative,
    edge=names,
    error=names,
)


@SETTINGS
@given(timing=timings, seen_by=names)
def test_timing_round_trip_and_the_edge_that_saw_it(timing: Timing, seen_by: str) -> None:
    message = wire_trip(wire.timing_to_proto(timing))
    assert wire.timing_from_proto(message) == timing
    assert wire.timing_from_proto(message, edge=seen_by) == replace(
        timing, edge=timing.edge or seen_by
    )


@pytest.mark.parametrize("field", ["seconds", "compute_seconds", "load_fraction"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_timings_are_refused_naming_the_field(field: str, value: float) -> None:
    message = wire.timing_to_proto(Timing("w0", 1.0, True))
    setattr(message, field, value)
    with pytest.raises(InvalidInput, match=f"timing.{field} must be a finite number >= 0"):
        wire.timing_from_proto(message)


# ---- headers -----------------------------------------------------------------------------------


@st.composite
def placement_headers(draw: st.DrawFn) -> PlacementHeader:
    count = draw(st.integers(0, 6))
    return PlacementHeader(
        job_id=draw(names),
        model=draw(names),
        n_features=draw(int64s),
        n_classes=draw(int64s),
        partitions=tuple(draw(st.lists(int64s, min_size=count, max_size=count))),
        coefficients=tuple(draw(st.lists(finite, min_size=count, max_size=count))),
        l2=draw(finite),
        n_partitions=draw(int64s),
        epoch=draw(int64s),
        rows=tuple(draw(st.lists(int64s, max_size=6))),
    )


@SETTINGS
@given(header=placement_headers())
def test_placement_header_round_trip(header: PlacementHeader) -> None:
    message = wire_trip(wire.placement_header_to_proto(header))
    assert wire.placement_header_from_proto(message) == header


block_headers = st.builds(
    BlockHeader,
    job_id=names,
    worker_index=int64s,
    rows=int64s,
    cols=int64s,
    nnz=int64s,
    epoch=int64s,
    work_fraction=finite,
)


@SETTINGS
@given(header=block_headers)
def test_block_header_round_trip(header: BlockHeader) -> None:
    message = wire_trip(wire.block_header_to_proto(header))
    assert wire.block_header_from_proto(message) == header


# ---- job configs: proto3 optional presence -----------------------------------------------------

CONFIG_FIELDS = {f.name: f for f in fields(JobConfig)}
DEFAULTS = JobConfig()


def _values(name: str) -> st.SearchStrategy[Any]:
    default = getattr(DEFAULTS, name)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.just(0), int64s)  # 0 on purpose: it must stay 0
    if isinstance(default, float):
        return st.one_of(st.just(0.0), finite)
    return names


configs = st.builds(JobConfig, **{name: _values(name) for name in CONFIG_FIELDS})


@SETTINGS
@given(config=configs)
def test_job_config_round_trip(config: JobConfig) -> None:
    back = wire.job_config_from_proto(wire_trip(wire.job_config_to_proto(config)))
    # an empty string means "the default" on the wire (strings have no presence)
    expected = replace(
        config,
        **{
            name: getattr(DEFAULTS, name)
            for name, value in asdict(config).items()
            if isinstance(value, str) and not value
        },
    )
    assert back == expected


@SETTINGS
@given(chosen=st.dictionaries(st.sampled_from(sorted(CONFIG_FIELDS)), st.none()), data=st.data())
def test_job_spec_presence_set_fields_are_kept_absent_ones_default(
    chosen: dict[str, None], data: st.DataObject
) -> None:
    values = {name: data.draw(_values(name), label=name) for name in chosen}
    spec = wire_trip(master_pb2.JobSpec(**values))
    config = wire.job_config_from_proto(spec)
    for name in CONFIG_FIELDS:
        got, default = getattr(config, name), getattr(DEFAULTS, name)
        if name in values and not (isinstance(default, str) and not values[name]):
            assert got == values[name], name
        else:
            assert got == default, name


def test_explicit_zeros_stay_zero() -> None:
    spec = master_pb2.JobSpec(rounds=0, s_edge=0, learning_rate=0.0, checkpoint_every=0, l2=0.0)
    config = wire.job_config_from_proto(wire_trip(spec))
    assert (config.rounds, config.s_edge, config.checkpoint_every) == (0, 0, 0)
    assert config.learning_rate == 0.0 and config.l2 == 0.0
    with pytest.raises(InvalidInput, match=r"rounds must be in \[1, 1000000\], got 0"):
        config.validate()  # validated as 0, not silently replaced by the default
    assert wire.job_config_from_proto(master_pb2.JobSpec()) == DEFAULTS


# ---- job statuses ------------------------------------------------------------------------------

records = st.builds(
    RoundRecord,
    round=int64s,
    seconds=finite,
    loss=finite,
    stragglers=st.integers(-(2**31), 2**31 - 1),
    wall_seconds=finite,
)
vectors = arrays(np.float64, st.integers(0, 6), elements=finite)


@st.composite
def statuses(draw: st.DrawFn) -> JobStatus:
    params = draw(st.one_of(st.none(), vectors))
    return JobStatus(
        job_id=draw(names),
        state=draw(st.sampled_from([PENDING, RUNNING, *FINAL])),
        config=draw(configs),
        round=draw(int64s),
        message=draw(names),
        history=tuple(draw(st.lists(records, max_size=4))),
        accuracy=draw(st.floats(allow_infinity=False)),  # NaN: not measured yet
        predicted_round_seconds=draw(finite),
        plan_json=draw(names),
        last_timings=tuple(draw(st.lists(timings, max_size=4))),
        placements=draw(int64s),
        setup_seconds=draw(finite),
        params=params,
        param_history=tuple(draw(st.lists(vectors, max_size=3))),
    )


@SETTINGS
@given(status=statuses(), include_params=st.booleans())
def test_job_status_carries_every_field(status: JobStatus, include_params: bool) -> None:
    message = wire_trip(wire.job_status_to_proto(status, include_params=include_params))
    assert (message.job_id, message.round, message.message) == (
        status.job_id,
        status.round,
        status.message,
    )
    assert message.state == wire.STATES[status.state] and message.rounds == status.config.rounds
    assert (
        math.isnan(message.accuracy)
        if math.isnan(status.accuracy)
        else (message.accuracy == status.accuracy)
    )
    assert message.predicted_round_seconds == status.predicted_round_seconds
    assert (message.plan_json, message.placements) == (status.plan_json, status.placements)
    assert message.setup_seconds == status.setup_seconds
    assert [RoundRecord(**_record(r)) for r in message.history] == list(status.history)
    assert [wire.timing_from_proto(t) for t in message.last_timings] == list(status.last_timings)
    config = wire.job_config_from_proto(message.spec)
    assert config == wire.job_config_from_proto(wire.job_config_to_proto(status.config))
    if include_params and status.params is not None:
        np.testing.assert_array_equal(wire.tensor_from_proto(message.params, "p"), status.params)
        got = [wire.tensor_from_proto(p, "p") for p in message.param_history]
        assert len(got) == len(status.param_history)
        for a, b in zip(got, status.param_history, strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        assert not message.HasField("params") and len(message.param_history) == 0


@SETTINGS
@given(status=statuses(), cut=st.integers(-3, 40))
def test_a_history_delta_carries_the_records_from_its_offset(status: JobStatus, cut: int) -> None:
    """A watch sends each record once: the records from ``history_offset`` on, nothing before."""
    message = wire_trip(wire.job_status_to_proto(status, history_from=cut))
    offset = min(max(cut, 0), len(status.history))
    assert message.history_offset == offset
    assert [RoundRecord(**_record(r)) for r in message.history] == list(status.history[offset:])


def _record(message: Any) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in fields(RoundRecord)}


# ---- matrix jobs -------------------------------------------------------------------------------


@SETTINGS
@given(
    scheme=names,
    n=int64s,
    k=int64s,
    seed=int64s,
    deadline=finite,
    job_id=names,
    workers=st.lists(names, max_size=4),
)
def test_matmul_spec_from_proto(
    scheme: str, n: int, k: int, seed: int, deadline: float, job_id: str, workers: list[str]
) -> None:
    message = master_pb2.MatmulSpec(
        scheme=scheme,
        n=n,
        k=k,
        seed=seed,
        deadline_seconds=deadline,
        job_id=job_id,
        workers=workers,
    )
    spec = wire.matmul_spec_from_proto(wire_trip(message))
    assert spec.scheme == (scheme or "sparse")
    assert (spec.n, spec.k, spec.seed, spec.job_id) == (n, k, seed, job_id)
    assert spec.deadline_seconds == deadline and spec.workers == tuple(workers)


matrix_jobs = st.builds(
    MatmulJobStatus,
    job_id=names,
    scheme=names,
    n=int64s,
    k=int64s,
    rows=int64s,
    cols=int64s,
    worst_condition=finite,
    block_nnz=st.lists(int64s, max_size=5).map(tuple),
    block_bytes=st.lists(int64s, max_size=5).map(tuple),
    encode_seconds=finite,
    place_seconds=finite,
    products=int64s,
    k_b=int64s,
    rhs_cols=int64s,
    weight=st.tuples(int64s, int64s),
    weight_bound=int64s,
    rhs_block_nnz=st.lists(int64s, max_size=5).map(tuple),
    rhs_block_bytes=st.lists(int64s, max_size=5).map(tuple),
    state=st.sampled_from(["pending", "running", "succeeded", "failed", "cancelled"]),
    message=names,
    tolerance=int64s,
    node_tolerance=int64s,
    workers=st.lists(names, max_size=4).map(tuple),
    epoch=int64s,
    replacements=int64s,
    replaced_bytes=int64s,
)


@SETTINGS
@given(job=matrix_jobs)
def test_matmul_job_carries_every_field(job: MatmulJobStatus) -> None:
    assert wire.matmul_job_from_proto(wire_trip(wire.matmul_job_to_proto(job))) == job


@SETTINGS
@given(
    job_id=names,
    sequence=int64s,
    value=arrays(np.float64, array_shapes(min_dims=1, max_dims=2, max_side=6), elements=finite),
    seconds=finite,
    decoded_from=st.lists(int64s, max_size=5),
    product_timings=st.lists(timings, max_size=4),
)
def test_matmul_product_carries_every_field(
    job_id: str,
    sequence: int,
    value: np.ndarray,
    seconds: float,
    decoded_from: list[int],
    product_timings: list[Timing],
) -> None:
    product = MatmulProduct(
        job_id, sequence, value, seconds, tuple(decoded_from), tuple(product_timings)
    )
    message = wire_trip(wire.matmul_product_to_proto(product))
    assert (message.job_id, message.sequence, message.seconds) == (job_id, sequence, seconds)
    assert list(message.decoded_from) == decoded_from
    assert [wire.timing_from_proto(t) for t in message.timings] == product_timings
    np.testing.assert_array_equal(wire.tensor_from_proto(message.product, "p"), value)


# ---- partition chunks --------------------------------------------------------------------------


@st.composite
def partitions(draw: st.DrawFn) -> tuple[Any, np.ndarray]:
    rows, cols = draw(st.integers(0, 30)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=rows).astype(draw(st.sampled_from([np.int64, np.float64])))
    if draw(st.booleans()):
        features: Any = sp.random(rows, cols, density=0.4, format="csr", random_state=seed)
    else:
        features = rng.standard_normal((rows, cols))
    return features, labels


@SETTINGS
@given(part=partitions(), index=small, chunk_bytes=st.integers(1, 600))
def test_partition_chunks_split_the_rows_exactly(
    part: tuple[Any, np.ndarray], index: int, chunk_bytes: int
) -> None:
    features, labels = part
    rows = int(features.shape[0])
    chunks = [wire_trip(c) for c in wire.partition_chunks(index, features, labels, chunk_bytes)]
    read = [wire.partition_chunk_from_proto(c) for c in chunks]
    assert all(partition == index for partition, _, _ in read)
    sizes = [int(x.shape[0]) for _, x, _ in read]
    assert sum(sizes) == rows and all(size == sizes[0] for size in sizes[:-1])
    if rows:
        assert len(chunks) == math.ceil(rows / sizes[0])
    else:
        assert sizes == [0]  # an empty partition still sends its (empty) chunk
    assert all(c.HasField("sparse") == sp.issparse(features) for c in chunks)
    joined_labels = np.concatenate([y for _, _, y in read])
    np.testing.assert_array_equal(joined_labels, labels)
    if sp.issparse(features):
        joined = sp.vstack([x for _, x, _ in read], format="csr")
        assert joined.shape == features.shape and (joined != features).nnz == 0
    else:
        joined = np.vstack([x for _, x, _ in read])
        np.testing.assert_array_equal(joined, features)
        per_row = features.shape[1] * 8 + 8
        if per_row <= chunk_bytes:  # one row fits: every chunk stays within the budget
            assert all(size * per_row <= chunk_bytes for size in sizes)


def test_a_chunk_without_features_is_refused() -> None:
    chunk = worker_pb2.PartitionChunk(partition=3, labels=wire.tensor_to_proto(np.zeros(2)))
    with pytest.raises(InvalidInput, match="chunk of partition 3 has no features"):
        wire.partition_chunk_from_proto(chunk)


def test_chunk_labels_must_be_one_dimensional() -> None:
    chunk = next(wire.partition_chunks(1, np.zeros((2, 2)), np.zeros(2)))
    chunk.labels.CopyFrom(wire.tensor_to_proto(np.zeros((2, 1))))
    with pytest.raises(InvalidInput, match="partition 1 labels: expected shape"):
        wire.partition_chunk_from_proto(chunk)


# ---- the header-then-chunks reader -------------------------------------------------------------


def _stream(kinds: list[str]) -> list[Any]:
    header = wire.placement_header_to_proto(
        PlacementHeader("j", "least_squares", 2, 1, (0,), (1.0,), 0.0, 1, 1, (1,))
    )
    chunk = next(wire.partition_chunks(0, np.ones((1, 2)), np.ones(1)))
    return [
        worker_pb2.PlaceDataRequest(header=header)
        if kind == "header"
        else worker_pb2.PlaceDataRequest(chunk=chunk)
        for kind in kinds
    ]


@SETTINGS
@given(kinds=st.lists(st.sampled_from(["header", "chunk"]), max_size=6), active=st.booleans())
def test_read_stream(kinds: list[str], active: bool) -> None:
    messages = _stream(kinds)
    log: list[tuple[str, Any]] = []

    def begin(header: Any) -> list[Any]:
        log.append(("begin", header.job_id))
        return []

    def add(builder: list[Any], chunk: Any) -> None:
        builder.append(chunk.partition)

    def read() -> tuple[list[Any], int]:
        return wire.read_stream(iter(messages), "placement", begin, add, lambda: active)

    if not kinds:
        with pytest.raises(InvalidInput, match=r"^placement: empty stream$"):
            read()
    elif kinds[0] != "header":
        with pytest.raises(InvalidInput, match=r"^placement: the first message must be the header"):
            read()
    elif "header" in kinds[1:]:
        with pytest.raises(InvalidInput, match=r"^placement: a second header arrived"):
            read()
    elif not active:
        with pytest.raises(InvalidInput, match=r"^placement: the call ended before it completed"):
            read()
    else:
        builder, received = read()
        assert log == [("begin", "j")]
        assert builder == [0] * (len(kinds) - 1)
        assert received == sum(m.ByteSize() for m in messages)


def test_read_stream_with_other_field_names() -> None:
    header = worker_pb2.BlockHeader(job_id="m", rows=1, cols=1, nnz=1)
    rows = wire.csr_to_proto(sp.csr_matrix(np.ones((1, 1))))
    messages = [
        worker_pb2.PlaceBlockRequest(header=header),
        worker_pb2.PlaceBlockRequest(chunk=worker_pb2.BlockChunk(first_row=0, rows=rows)),
    ]
    builder, _ = wire.read_stream(
        messages,
        "block",
        lambda h: [wire.block_header_from_proto(h)],
        lambda b, c: b.append(c.first_row),
        lambda: True,
    )
    assert builder[0].job_id == "m" and builder[1:] == [0]
