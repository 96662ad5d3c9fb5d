"""The exception tree of edgecode.

The numeric core raises these (or plain ``ValueError`` for bad arguments at a public edge); the
service runtime maps each class to one gRPC status in a single place.
"""


class EdgecodeError(Exception):
    """Base class of every edgecode error."""


class InvalidInput(EdgecodeError, ValueError):
    """A message or argument is malformed: wrong dtype, shape, length, or a non-finite value."""


class BadModel(InvalidInput):
    """A model reference that cannot be used: not importable, not a ``torch.nn.Module``, a
    parameter layout that changes between calls, or a loss that is not finite."""


class NotDecodable(EdgecodeError, ValueError):
    """The results that arrived do not determine the exact answer (too many stragglers)."""


class StaleRound(EdgecodeError):
    """A message refers to a round that is no longer current."""


class UnknownJob(EdgecodeError):
    """A message refers to a job this service does not know."""


class Infeasible(EdgecodeError, ValueError):
    """Code or plan parameters that no construction can satisfy; the message names the condition."""


class NotAllowed(EdgecodeError):
    """The caller may not do this (for example a worker that is not in the plan)."""


class Overloaded(EdgecodeError):
    """A size or rate limit was hit (message too large, too many jobs)."""


class RoundFailed(EdgecodeError):
    """A round could not be completed: more stragglers than the code tolerates until its deadline."""


class AlreadyExists(EdgecodeError):
    """A name is taken by something else (a job id reused for a different job)."""
