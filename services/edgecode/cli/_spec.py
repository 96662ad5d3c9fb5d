"""Reading a cluster spec for a subcommand: every error names the file and the key.

:func:`edgecode.planning.spec.load_spec` checks values (``shift must be >= 0``) but takes the
types TOML gives it, so ``link_seconds = "fast"`` used to surface as a bare float conversion
error (or a ``TypeError`` traceback for a worker key). Here each value's TOML type is checked
against the spec's fields first, unknown keys are refused, and the loader's own errors are
prefixed with the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli._errors import UsageError

if TYPE_CHECKING:
    from edgecode.planning.spec import ClusterSpec

EDGE_KEYS = {"name": "str", "link_seconds": "float", "worker": "list"}
JOB_KEYS = {"partitions": "int"}
TOP_KEYS = {"job": "table", "edge": "list"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


#: What each field type accepts, and how the error says it.
ACCEPTS = {
    "float": ({"int", "float"}, "a number"),
    "int": ({"int"}, "an integer"),
    "bool": ({"bool"}, "true or false"),
    "str": ({"str"}, "a string"),
    "table": ({"table"}, "a table"),
    "list": ({"list"}, "an array of tables"),
}


def _check_keys(where: str, data: dict[str, Any], fields: dict[str, str]) -> None:
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown} (expected some of {sorted(fields)})")
    for key, value in data.items():
        kinds, words = ACCEPTS[fields[key]]
        if _kind(value) not in kinds:
            raise UsageError(f"{where}: {key} must be {words}, got {value!r}")


def check_spec_types(data: dict[str, Any], path: Path) -> None:
    """Raise :class:`UsageError` naming ``path`` and the key when a value has the wrong type."""
    from edgecode.planning.spec import WorkerSpec

    worker_keys = {f.name: str(f.type) for f in dataclasses.fields(WorkerSpec)}
    _check_keys(str(path), data, TOP_KEYS)
    _check_keys(f"{path}: [job]", data.get("job", {}), JOB_KEYS)
    for e_index, edge in enumerate(data.get("edge", [])):
        if not isinstance(edge, dict):
            raise UsageError(f"{path}: edge {e_index} must be a [[edge]] table")
        where = f"{path}: edge {edge.get('name', e_index)!r}"
        _check_keys(where, edge, EDGE_KEYS)
        for w_index, worker in enumerate(edge.get("worker", [])):
            if not isinstance(worker, dict):
                raise UsageError(f"{where}: worker {w_index} must be a [[edge.worker]] table")
            _check_keys(f"{where} worker {worker.get('name', w_index)!r}", worker, worker_keys)


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """The spec in ``path``; a missing file, bad TOML, a wrong type or value names the file
    and the key (:class:`UsageError` / ``FileNotFoundError``)."""
    from edgecode.planning.spec import spec_from_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"spec file {path} does not exist")
    if path.is_dir():
        raise UsageError(f"spec file {path} is a folder")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a text file: {exc}") from None
    check_spec_types(data, path)
    try:
        return spec_from_dict(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
