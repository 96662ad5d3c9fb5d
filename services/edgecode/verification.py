"""Catching lying workers with the code's own redundancy (issue 15, item 5).

An exact linear gradient code decodes the same answer from EVERY decodable set of honest
messages: ``D_T = sum_{i in T} a_T[i] m_i`` does not depend on T. A message that was tampered
with (scaled, randomised, sign-flipped) enters different decodings with different coefficients,
so the decodings stop agreeing. :class:`VerifyingRule` uses that:

* a set S of arrivals is *consistent* when it is decodable and, for every sender i whose removal
  leaves S decodable, ``D_{S \\ {i}}`` agrees with ``D_S`` (relative difference at most ``tol``),
  and at least one such i exists (otherwise S cannot be checked: it is *unverified*);
* once the arrivals are decodable the rule waits (at most the collector's ``slack``) for spare
  arrivals; a consistent S ends the round with ``D_S``;
* an inconsistent S marks the round; the liar is located when removing one sender x leaves a
  consistent set ``S \\ {x}`` (this needs two spare arrivals beyond a minimal decodable set); the
  round then ends with ``D_{S \\ {x}}`` and x is reported in :attr:`Decoded.suspects`;
* the round is NEVER completed from an inconsistent set: without a located liar by the deadline
  it fails (the master retries it on a new epoch);
* at the end of the slack, a decodable set that could not be checked (no spare arrived) is
  accepted *unverified*: a lie in such a round goes undetected (README, "Lying workers").

Which lies are caught: any lie in a message that some OTHER arrival's data also covers (the
code's redundancy), as long as the two decodings weigh it differently. Fractional repetition
decodes with 0/1 weights, so a liar is caught when another member of its group arrived and the
decodings pick differently; generic codes (cyclic repetition, the universal construction of
hierarchical codes) weigh every sender differently in every decoding.

Example
-------
>>> import numpy as np
>>> from edgecode.codes.flat import cyclic_repetition
>>> code = cyclic_repetition(5, 2)
>>> messages = code.B @ np.eye(5)          # g_j = e_j: the true sum is all ones
>>> messages[1] *= -1.0                    # worker 1 lies
>>> rule = VerifyingRule(5, code.decode_vector, needed=3)
>>> [rule.offer(i, messages[i]) for i in (0, 1, 2, 3, 4)]
[False, False, False, False, True]
>>> result = rule.result()
>>> result.suspects, bool(np.allclose(result.value, 1.0))
((1,), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgecode.codes.combine import Decoded, MessageBuffer
from edgecode.errors import NotDecodable

FloatArray = np.ndarray

#: Two decodings agree when their relative difference is at most this (decoding errors are
#: ~1e-12 for the codes' conditioning; a lie of any useful size is far above it).
AGREEMENT = 1e-6


class VerifyingRule:
    """Exact decoding checked against a spare arrival (see the module docstring).

    ``decode_vector(alive)`` is the code's decoding vector over all ``n_senders`` (zero outside
    ``alive``), raising :class:`NotDecodable`; ``needed`` the fewest arrivals that can decode.
    """

    def __init__(
        self,
        n_senders: int,
        decode_vector: Callable[[Sequence[int]], FloatArray],
        needed: int = 1,
        tol: float = AGREEMENT,
    ) -> None:
        self.n_senders = n_senders
        self._decode_vector = decode_vector
        self._needed = max(1, needed)
        self._tol = tol
        self._buffer: MessageBuffer | None = None
        self._result: tuple[FloatArray, tuple[int, ...], FloatArray] | None = None
        self._suspects: tuple[int, ...] = ()
        self._inconsistent = False
        self._provisional: tuple[FloatArray, tuple[int, ...], FloatArray] | None = None

    # ---- decoding helpers --------------------------------------------------------------------
    def _decode(self, senders: Sequence[int]) -> tuple[FloatArray, FloatArray] | None:
        assert self._buffer is not None
        try:
            weights = self._decode_vector(tuple(senders))
        except NotDecodable:
            return None
        return self._buffer.combine(weights), weights

    def _agree(self, a: FloatArray, b: FloatArray) -> bool:
        scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-300)
        return bool(float(np.linalg.norm(a - b)) <= self._tol * scale)

    def _check(self, senders: tuple[int, ...]) -> str:
        """'consistent', 'unverified' (decodable, nothing to compare), 'inconsistent' or
        'undecodable'."""
        full = self._decode(senders)
        if full is None:
            return "undecodable"
        compared = False
        for i in senders:
            rest = self._decode([s for s in senders if s != i])
            if rest is None:
                continue
            compared = True
            if not self._agree(full[0], rest[0]):
                return "inconsistent"
        return "consistent" if compared else "unverified"

    # ---- the Rule protocol -------------------------------------------------------------------
    def offer(self, sender: int, message: FloatArray) -> bool:
        if self._buffer is None:
            self._buffer = MessageBuffer(self.n_senders, int(message.shape[0]))
        self._buffer.add(sender, message)
        arrived = self._buffer.senders
        if len(arrived) < self._needed:
            return False
        verdict = self._check(arrived)
        if verdict == "consistent":
            self._finish(arrived)
            return True
        if verdict == "unverified":
            full = self._decode(arrived)
            assert full is not None
            self._provisional = (full[0], arrived, full[1])
            return False
        if verdict == "inconsistent":
            self._inconsistent = True
            self._provisional = None
            for x in arrived:  # a single liar: its removal leaves a consistent set
                rest = tuple(s for s in arrived if s != x)
                if self._check(rest) == "consistent":
                    self._suspects = (x,)
                    self._finish(rest)
                    return True
        return False

    def _finish(self, senders: tuple[int, ...]) -> None:
        full = self._decode(senders)
        assert full is not None
        self._result = (full[0], senders, full[1])

    def provisional(self) -> bool:
        """A decodable set arrived that could not be checked yet (waiting for a spare)."""
        return self._provisional is not None and self._result is None

    def _decoded(
        self, result: tuple[FloatArray, tuple[int, ...], FloatArray], verified: bool
    ) -> Decoded:
        value, senders, weights = result
        used = tuple(i for i in senders if weights[i] != 0)
        return Decoded(value, used, weights, suspects=self._suspects, verified=verified)

    def result(self) -> Decoded:
        if self._result is None:
            raise NotDecodable("no consistent decodable set arrived yet")
        return self._decoded(self._result, verified=True)

    def at_deadline(self) -> Decoded | None:
        if self._result is not None:
            return self._decoded(self._result, verified=True)
        if self._provisional is not None and not self._inconsistent:
            return self._decoded(self._provisional, verified=False)
        return None  # never from an inconsistent set

    def failure(self) -> str:
        arrived = 0 if self._buffer is None else len(self._buffer.senders)
        if self._inconsistent:
            return (
                f"the {arrived} results that arrived disagree (a sender lied) and no single "
                "sender's exclusion made them agree; the round was not applied"
            )
        return (
            f"{arrived} of {self.n_senders} usable results arrived and they do not determine the "
            f"exact answer (at least {self._needed} needed)"
        )
