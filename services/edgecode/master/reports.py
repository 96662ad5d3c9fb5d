"""Round timings for the coordinator's runtime fits, sent in batches beside the rounds.

A report per round cost the coordinator ~2 ms of CPU and the master a call per round, on the
same cores the workers compute on. :class:`BatchedReports` wraps the master's cluster view:
``report`` keeps the round's timings and sends what was kept at most every ``interval``
seconds, from the master's pool (a round never waits for the coordinator, and a report still
in flight delays the next batch instead of losing it); ``plan`` first sends what is kept, so
the planner fits every round so far (a re-plan after the profiling rounds sees all three).
At most ``limit`` timings are kept while the coordinator does not answer (the oldest go).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from edgecode.master.ports import ClusterView, Topology
from edgecode.planning.spec import Plan
from edgecode.records import Timing

log = logging.getLogger(__name__)

#: Seconds between two batches of timings (a few a second keep the fits fresh).
REPORT_INTERVAL = 0.25
#: Timings kept at most while the coordinator does not answer.
REPORT_LIMIT = 4096


class BatchedReports:
    """A :class:`ClusterView` whose ``report`` batches (see the module doc)."""

    def __init__(
        self,
        cluster: ClusterView,
        pool: Executor,
        clock: Callable[[], float] = time.monotonic,
        interval: float = REPORT_INTERVAL,
        limit: int = REPORT_LIMIT,
    ) -> None:
        self._cluster = cluster
        self._pool = pool
        self._clock = clock
        self._interval = interval
        self._kept: deque[Timing] = deque(maxlen=limit)
        self._last: tuple[float, float] = (0.0, 0.0)  # the newest round's seconds and prediction
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._sent_at = -float("inf")

    def topology(self) -> Topology:
        return self._cluster.topology()

    def plan(
        self,
        partitions: int,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, float]:
        self.flush()
        return self._cluster.plan(partitions, exclude, max_partitions, current)

    def report(self, timings: Sequence[Timing], round_seconds: float, predicted: float) -> None:
        with self._lock:
            self._kept.extend(timings)
            self._last = (round_seconds, predicted)
            due = self._clock() - self._sent_at >= self._interval
        if due and self._sending.acquire(blocking=False):
            try:
                self._pool.submit(self._send_and_release)
            except RuntimeError:  # the pool is shutting down
                self._sending.release()

    def flush(self, timeout: float = 5.0) -> None:
        """Send what is kept now (waiting up to ``timeout`` s for a batch still in flight)."""
        if self._sending.acquire(timeout=timeout):
            self._send_and_release()

    def _send_and_release(self) -> None:
        try:
            with self._lock:
                batch = tuple(self._kept)
                self._kept.clear()
                seconds, predicted = self._last
                self._sent_at = self._clock()
            if batch:
                self._cluster.report(batch, seconds, predicted)
        except Exception as exc:  # the coordinator being away must not stop training
            log.debug("could not report timings: %s", exc)
        finally:
            self._sending.release()
