"""Well-conditioned real MDS subspaces for the universal gradient code (private).

An [n, d] real MDS code is a d-dimensional subspace V of R^n whose projection onto ANY d
coordinates is one-to-one. The universal gradient code (:mod:`edgecode.codes.flat`) takes its
columns from such a V with d = n - s, and decoding from an alive set A (|A| = d) inverts the
projection onto A: with Q (n x d) an orthonormal basis of V, the decoding error is governed by
``cond(Q[A]) = sigma_max(Q[A]) / sigma_min(Q[A]) <= 1 / sigma_min(Q[A])``. A random V has a
heavy-tailed worst case over the C(n, s) alive sets (at n = 15, s = 12 a Gaussian draw has one
set with cond 6e6), so V is chosen to make the WORST alive set well conditioned.

Duality. Let W (n x s) be an orthonormal basis of V's orthogonal complement. ``[Q W]`` is
orthogonal, and the CS decomposition of its 2 x 2 block partition (rows A | rest, columns
d | s) gives ``sigma_min(Q[A]) = sigma_min(W[rest])`` (the cosines of the principal angles;
the extra singular values of the larger block are 1). So it suffices to find an orthonormal
frame F (n x r) with r = min(d, s) whose every r x r row block is well conditioned, and take
V = span F (when r = d) or its complement (when r = s).

Construction of F (deterministic given ``seed``):

* r = 1: ``F = 1 / sqrt(n)`` (all ones). Optimal: any unit vector has a coordinate of
  magnitude at most 1 / sqrt(n), and here every coordinate has exactly that.
* otherwise: the score of a subset S is ``h_S = ||F[S]^{-1}||_F^2``, which lies in
  ``[1, r] / sigma_min(F[S])^2``. When the r-subsets number at most
  ``FRAME_ENUMERATION_LIMIT`` (every n <= 16, and r <= 3 up to n = 67) a seeded Gaussian
  frame is improved against ALL of them by ``ASCENT_STEPS`` steps of gradient descent on the
  smooth maximum ``sum_S (h_S / max h)^{p/2}``, with ``d h_S / d F[S] = -2 X^T X X^T``
  (X = F[S]^{-1}) and a QR retraction onto orthonormal frames. The steps run in
  ``ASCENT_ROUNDS`` rounds on the currently worst subsets only (the others weigh next to
  nothing), and a round is kept only if the worst score over ALL subsets dropped, so the
  result is never worse than the draw. Best draws of Gaussian frames were tried first: the
  worst case is heavy-tailed and the best of 32 draws at n = 16, s = 8 is still 2.8e4, where
  the descent reaches 4e3-6e3 from any start. Above the limit the seeded Gaussian frame is
  used as drawn: descending on a sample of subsets only fits the sample (measured at
  n = 24..64 on fresh samples: no gain).

Results are cached per (n, s, seed): a hierarchical code with equal edges builds its inner
subspace once.

Example
-------
>>> import itertools
>>> Q, W = mds_bases(6, 3)
>>> Q.shape, W.shape, bool(np.allclose(Q.T @ W, 0.0))
((6, 3), (6, 3), True)
>>> worst = max(np.linalg.cond(Q[list(A)]) for A in itertools.combinations(range(6), 3))
>>> bool(worst < 30)
True
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from edgecode.codes._linalg import ENUMERATION_LIMIT, FloatArray

#: Gradient steps after the seeded draw, in rounds that each rescore every subset once.
ASCENT_STEPS = 60
ASCENT_ROUNDS = 6
#: A round's steps look at the worst 1 / _ACTIVE_FRACTION of the subsets (at least _ACTIVE_MIN).
_ACTIVE_FRACTION = 50
_ACTIVE_MIN = 64
#: Exponent of the smooth maximum: sets at half the worst score weigh 2^-(p/2 - 1) ~ 1e-2.
_SMOOTH_POWER = 16
#: r-subsets scored per frame when there are more than FRAME_ENUMERATION_LIMIT (r x r blocks
#: are small, so the limit is higher than the one for whole decoding matrices).
FRAME_ENUMERATION_LIMIT = 50_000
SAMPLED_SUBSETS = 2_000


def mds_bases(n: int, s: int, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """Orthonormal bases (read-only) of a well-conditioned [n, n - s] MDS code V, shape
    (n, n - s), and of its orthogonal complement, shape (n, s).

    Requires 1 <= s < n (callers validate). See the module docstring for the construction.
    """
    return _cached_bases(int(n), int(s), int(seed))


def subset_index(
    n: int, size: int, rng: np.random.Generator, limit: int = ENUMERATION_LIMIT
) -> tuple[NDArray[np.intp], bool]:
    """Every ``size``-subset of range(n) as rows (True) or a seeded sample of SAMPLED_SUBSETS
    distinct ones (False) when there are more than ``limit``."""
    if math.comb(n, size) <= limit:
        return _combinations(n, size), True
    rows = np.argsort(rng.random((SAMPLED_SUBSETS, n)), axis=1)[:, :size]
    return np.unique(np.sort(rows, axis=1), axis=0).astype(np.intp), False


def _build_combinations(n: int, size: int) -> NDArray[np.intp]:
    """All ``size``-subsets of range(n), lexicographic, one per row (read-only)."""
    index = np.array(list(itertools.combinations(range(n), size)), dtype=np.intp)
    index = index.reshape(-1, size)
    index.setflags(write=False)
    return index


def _build_bases(n: int, s: int, seed: int) -> tuple[FloatArray, FloatArray]:
    d = n - s
    r = min(d, s)
    rng = np.random.default_rng([seed, n, s])
    if r == 1:
        frame = np.full((n, 1), 1.0 / math.sqrt(n))
    else:
        index, exhaustive = subset_index(n, r, rng, limit=FRAME_ENUMERATION_LIMIT)
        frame = orthonormalize(rng.standard_normal((n, r)))
        if exhaustive:  # on a sample, the descent only fits the sample (measured: no gain)
            frame = descend_worst_case(frame, index)
    other = _complement(frame)
    basis, dual = (frame, other) if r == d else (other, frame)
    for array in (basis, dual):
        array.setflags(write=False)
    return basis, dual


# Cached wrappers (kept apart from the builders, which stay plain functions).
_combinations = functools.lru_cache(maxsize=128)(_build_combinations)
_cached_bases = functools.lru_cache(maxsize=256)(_build_bases)


def _complement(frame: FloatArray) -> FloatArray:
    """An orthonormal basis of the orthogonal complement of span(frame)."""
    full, _ = np.linalg.qr(frame, mode="complete")
    return np.ascontiguousarray(full[:, frame.shape[1] :], dtype=np.float64)


def inverse_scores(matrix: FloatArray, index: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
    """``X_S = matrix[S]^{-1}`` for every row S of ``index`` and ``h_S = ||X_S||_F^2``
    (inf for a singular block)."""
    blocks = matrix[index]
    try:
        inverses = np.linalg.inv(blocks)
    except np.linalg.LinAlgError:
        return np.zeros_like(blocks), np.full(index.shape[0], math.inf)
    scores = np.einsum("nij,nij->n", inverses, inverses)
    scores[~np.isfinite(scores)] = math.inf
    return np.asarray(inverses, dtype=np.float64), np.asarray(scores, dtype=np.float64)


def orthonormalize(matrix: FloatArray) -> FloatArray:
    """The Q factor of ``matrix``: the retraction onto orthonormal frames."""
    q, _ = np.linalg.qr(matrix)
    return np.asarray(q, dtype=np.float64)


def descend_worst_case(
    matrix: FloatArray,
    index: NDArray[np.intp],
    retract: Callable[[FloatArray], FloatArray] = orthonormalize,
) -> FloatArray:
    """Lower ``max_S h_S``, ``h_S = ||matrix[S]^{-1}||_F^2`` over the rows S of ``index``
    (square blocks), by gradient steps on its smooth maximum, each followed by ``retract``
    (orthonormal frames by default; the matrix codes keep their sparsity mask and unit rows).

    The steps run in rounds. A round takes ``ASCENT_STEPS // ASCENT_ROUNDS`` steps on an active
    set of subsets (the worst ones: the rest weigh next to nothing), then rescores every
    subset. The round is kept if the worst score over ALL subsets dropped; otherwise the
    subsets that overtook join the active set and the round is retried from the last kept
    matrix with half the step. The result is never worse than ``matrix``.
    """
    scores = inverse_scores(matrix, index)[1]
    worst = float(scores.max())
    if not math.isfinite(worst):
        return matrix
    size = min(index.shape[0], max(_ACTIVE_MIN, index.shape[0] // _ACTIVE_FRACTION))
    active = np.argsort(scores)[-size:]
    step = 0.1
    for _ in range(ASCENT_ROUNDS):
        trial, trial_step = _descend_on(
            matrix, index[active], step, ASCENT_STEPS // ASCENT_ROUNDS, retract
        )
        trial_scores = inverse_scores(trial, index)[1]
        overtaking = np.argsort(trial_scores)[-size:]
        if float(trial_scores.max()) < worst:
            matrix, worst, step = trial, float(trial_scores.max()), trial_step
            active = overtaking  # the worst subsets of the kept matrix
        else:
            active = np.union1d(active, overtaking)
            step *= 0.5
    return np.asarray(matrix, dtype=np.float64)


def _descend_on(
    matrix: FloatArray,
    index: NDArray[np.intp],
    step: float,
    steps: int,
    retract: Callable[[FloatArray], FloatArray],
) -> tuple[FloatArray, float]:
    """``steps`` gradient steps, each retracted, on the subsets ``index``; a step is kept only
    if it lowers their worst score (the step then grows, else it halves)."""
    inverses, scores = inverse_scores(matrix, index)
    worst = float(scores.max())
    n, r = matrix.shape
    for _ in range(steps):
        weights = (scores / worst) ** (_SMOOTH_POWER / 2 - 1)
        # d h / d M[S] = -2 X^T X X^T; the factor 2 and the power go into the normalisation.
        X = inverses
        block_gradient = -np.matmul(np.matmul(X.transpose(0, 2, 1), X), X.transpose(0, 2, 1))
        block_gradient *= weights[:, None, None]
        gradient = np.zeros((n, r))
        for position in range(index.shape[1]):  # scatter-add row ``position`` of every block
            gradient += _scatter_rows(index[:, position], block_gradient[:, position, :], n)
        norm = float(np.linalg.norm(gradient))
        if norm == 0.0 or not math.isfinite(norm):
            break
        trial = retract(matrix - step * gradient / norm)
        trial_inverses, trial_scores = inverse_scores(trial, index)
        trial_worst = float(trial_scores.max())
        if trial_worst < worst:
            matrix, inverses, scores, worst = trial, trial_inverses, trial_scores, trial_worst
            step *= 1.2
        else:
            step *= 0.5
    return np.asarray(matrix, dtype=np.float64), step


def _scatter_rows(rows: NDArray[np.intp], values: FloatArray, n: int) -> FloatArray:
    """``out[i] = sum of values[t] over t with rows[t] == i`` (out: n x values.shape[1])."""
    out = np.zeros((n, values.shape[1]))
    for column in range(values.shape[1]):
        out[:, column] = np.bincount(rows, weights=values[:, column], minlength=n)
    return out
