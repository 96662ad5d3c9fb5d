"""Files a job may name: only those inside the master's configured data directories.

A job reaches the master's file system through three fields: a data set that is a file
(``JobSpec.dataset``), a PyTorch model file (``torch:PATH.py:FUNCTION``) and a matrix file
(``MatmulSpec.matrix_path``). :class:`DataDirs` confines them. A path is resolved (relative to
the master's working directory, symbolic links followed) BEFORE anything else looks at it, and a
path outside every data directory is refused with :class:`~edgecode.errors.NotAllowed` whose
message does not depend on the file: whether it exists, is a folder or is readable is not told,
so the refusal cannot be used to probe the master's disk. Inside the directories, errors are as
usual (a missing file is reported as missing).

Example
-------
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> dirs = DataDirs([root])
>>> dirs.confine(root + "/train.csv", "dataset").name
'train.csv'
>>> dirs.confine("/etc/passwd", "dataset")
Traceback (most recent call last):
...
edgecode.errors.NotAllowed: dataset: files outside the master's data directories are not allowed
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edgecode.errors import NotAllowed


class DataDirs:
    """The folders whose files jobs may name (none: every file is refused)."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.roots = tuple(Path(os.path.realpath(Path(r).expanduser())) for r in roots if str(r))

    @classmethod
    def parse(cls, text: str) -> DataDirs:
        """Folders separated by ``os.pathsep`` (``:`` on Linux), as in ``PATH``."""
        return cls([part for part in text.split(os.pathsep) if part.strip()])

    def confine(self, path: str | Path, what: str) -> Path:
        """``path`` resolved, if it lies inside a data directory; NotAllowed otherwise (the same
        message whatever the file is)."""
        refusal = NotAllowed(f"{what}: files outside the master's data directories are not allowed")
        if str(path).startswith("~"):  # loaders differ on expanding it: refuse, never guess
            raise refusal
        try:
            resolved = Path(os.path.realpath(Path(path)))
        except (OSError, ValueError):  # a NUL byte, a loop of links: refused like any outsider
            raise refusal from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise refusal
        return resolved

    def __repr__(self) -> str:
        return f"DataDirs({[str(r) for r in self.roots]})"


def job_file_dirs(dataset: str, model: str) -> tuple[str, ...]:
    """The folders of the files a job names (a data set file, a ``torch:PATH.py`` model): what
    a master that should run the job must have among its data directories (a local cluster's
    launcher passes them).

    >>> job_file_dirs("breast_cancer", "")
    ()
    """
    from edgecode.learning.datasets import dataset_file
    from edgecode.learning.references import TORCH_PREFIX, parse_model_reference

    files = []
    path = dataset_file(dataset) if dataset.strip() else None
    if path is not None:
        files.append(path)
    if model.startswith(TORCH_PREFIX):
        reference = parse_model_reference(model)
        if reference.is_file:
            files.append(reference.source)
    return tuple(dict.fromkeys(str(Path(f).resolve().parent) for f in files))
