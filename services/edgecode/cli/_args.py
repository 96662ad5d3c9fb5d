"""Argument checking for the subcommands: a parser whose errors are one line, and ``type=``
functions that refuse a bad value while the arguments are parsed, so that nothing (a cluster, a
long computation) starts before every flag a user gave is known to be usable.

Each ``type=`` function raises :class:`argparse.ArgumentTypeError`, which argparse prefixes with
the flag (``argument --rounds: must be >= 1, got 0``). Only the standard library is imported at
module level; a check that needs a domain module (the data-set grammar, the straggler models)
imports it when it runs, which is only for the subcommand being run.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from edgecode.cli._errors import USAGE, one_line


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and exit with 2."""

    def error(self, message: str) -> NoReturn:
        """``edgecode: error: MESSAGE (see edgecode SUBCOMMAND --help)``, like every other error
        a user can cause."""
        root = self.prog.split()[0] if self.prog else "edgecode"
        self.exit(USAGE, f"{root}: error: {one_line(message)} (see {self.prog} --help)\n")


def _bad(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (either bound optional)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            _bad(f"expected an integer, got {text!r}")
        if low is not None and value < low:
            _bad(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            _bad(f"must be <= {high}, got {value}")
        return value

    convert.__name__ = "integer"
    return convert


def number(
    low: float | None = None, high: float | None = None, above: float | None = None
) -> Callable[[str], float]:
    """A finite float, ``>= low``, ``> above`` and ``<= high`` (each bound optional)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            _bad(f"expected a number, got {text!r}")
        if not math.isfinite(value):
            _bad(f"must be a finite number, got {text!r}")
        if low is not None and value < low:
            _bad(f"must be >= {low:g}, got {value:g}")
        if above is not None and value <= above:
            _bad(f"must be > {above:g}, got {value:g}")
        if high is not None and value > high:
            _bad(f"must be <= {high:g}, got {value:g}")
        return value

    convert.__name__ = "number"
    return convert


#: ``--seed``: numpy's generators take non-negative seeds only.
seed = integer(0)
#: Seconds that may be zero (emulated delays).
seconds = number(low=0.0)
#: A deadline: more than zero, at most a day.
deadline = number(above=0.0, high=86_400.0)


def choices_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A comma list of distinct names out of ``choices``, at least one."""

    def convert(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            _bad(f"expected a comma list of {','.join(choices)}, got {text!r}")
        if len(set(names)) != len(names):
            _bad(f"names a scheme twice: {text!r}")
        return names

    convert.__name__ = "list"
    return convert


def integer_list(low: int) -> Callable[[str], list[int]]:
    """A comma list of integers, each ``>= low``, at least one."""

    def convert(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            _bad(f"expected a comma list of integers, e.g. 3,3, got {text!r}")
        if not values or min(values) < low:
            _bad(f"expected a comma list of integers >= {low}, got {text!r}")
        return values

    convert.__name__ = "list"
    return convert


def straggle(text: str) -> str:
    """A worker's straggler emulation (``--straggle``), checked by the worker's own parser."""
    from edgecode.emulation import parse_straggle

    try:
        parse_straggle(text)
    except ValueError as exc:
        _bad(str(exc).removeprefix("--straggle: "))
    return text


def dataset(text: str) -> str:
    """A data set spec that names data on this machine (bundled, synthetic or a file)."""
    from edgecode.learning.datasets import check_dataset_spec

    try:
        check_dataset_spec(text)
    except (ValueError, FileNotFoundError) as exc:
        _bad(str(exc))
    return text


def dataset_syntax(text: str) -> str:
    """A data set spec for a remote master: a file need not exist here (the master loads it)."""
    from edgecode.learning.datasets import check_dataset_spec

    try:
        check_dataset_spec(text)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        _bad(str(exc))
    return text


def model(text: str) -> str:
    """A model name or ``torch:MODULE:FUNCTION`` reference importable on this machine."""
    from edgecode.learning.references import check_model_reference

    if text:
        try:
            check_model_reference(text)
        except ValueError as exc:
            _bad(str(exc))
    return text


def model_syntax(text: str) -> str:
    """A model for a remote master: built-in names are checked here, torch references only for
    their shape (the master imports them)."""
    from edgecode.learning.references import (
        TORCH_PREFIX,
        check_model_reference,
        parse_model_reference,
    )

    try:
        if text.startswith(TORCH_PREFIX):
            parse_model_reference(text)
        elif text:
            check_model_reference(text)
    except ValueError as exc:
        _bad(str(exc))
    return text


def optimizer(text: str) -> str:
    """An optimizer spec ``NAME[:KEY=VALUE,...]`` (gd, nesterov, sgd, adam)."""
    from edgecode.learning.optimizers import get_optimizer

    try:
        get_optimizer(text)
    except (ValueError, TypeError) as exc:
        _bad(str(exc))
    return text


_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>\d{1,5})$")


def address(text: str) -> str:
    """A gRPC address ``HOST:PORT`` (or a target with a scheme, e.g. ``dns:///host:port``)."""
    if "://" in text or text.startswith("unix:"):
        return text
    match = _HOST_PORT.match(text)
    if match is None:
        _bad(f"expected HOST:PORT, got {text!r}")
    if not 1 <= int(match["port"]) <= 65535:
        _bad(f"port must be in [1, 65535], got {match['port']}")
    return text


def existing_file(text: str) -> Path:
    """An input file that exists (and is not a folder)."""
    path = Path(text)
    if not path.exists():
        _bad(f"file {text} does not exist")
    if path.is_dir():
        _bad(f"{text} is a folder, expected a file")
    return path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_creatable(path: Path, text: str) -> None:
    """Every missing folder on the way to ``path`` can be made, and written in."""
    ancestor = _nearest_existing(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        _bad(f"cannot create {text}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        _bad(f"cannot create {text}: {ancestor} is not writable")


def output_file(text: str) -> Path:
    """A file to write: not a folder, in a folder that exists or can be made and written."""
    path = Path(text)
    if not text or path.is_dir():
        _bad(f"{text!r} is a folder, expected a file name" if text else "expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        _bad(f"cannot write {text}: permission denied")
    _check_creatable(path, text)
    return path


#: Suffixes matplotlib writes (``savefig`` picks the format from the suffix).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".webp")


def figure_file(text: str) -> Path:
    """A figure to write: :func:`output_file` with a suffix matplotlib knows."""
    path = output_file(text)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        _bad(f"expected a file ending in one of {', '.join(FIGURE_SUFFIXES)}, got {text!r}")
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: an existing folder, or one that can be made."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        _bad(f"{text} exists and is not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            _bad(f"cannot write in {text}: permission denied")
        return path
    _check_creatable(path, text)
    return path


def fraction_open_closed(text: str) -> float:
    """A number in (0, 1] (``--alpha``)."""
    try:
        value = float(text)
    except ValueError:
        _bad(f"expected a number, got {text!r}")
    if not 0 < value <= 1:
        _bad(f"must satisfy 0 < alpha <= 1, got {text}")
    return value


def straggle_classes(text: str) -> str:
    """Paper 2's two straggler classes (``--straggle-classes``), checked by their parser."""
    from edgecode.straggle_classes import parse_straggle_classes

    try:
        parse_straggle_classes(text)
    except ValueError as exc:
        _bad(str(exc).removeprefix("--straggle-classes: "))
    return text


def check(condition: bool, message: str) -> None:
    """A check across several flags, after parsing: a one-line error naming them."""
    if not condition:
        from edgecode.cli._errors import UsageError

        raise UsageError(message)
