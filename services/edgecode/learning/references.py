"""Model references ``torch:MODULE:FUNCTION`` and ``torch:PATH.py:FUNCTION``: parsing and import.

This module does not import torch (the referenced code does). A reference names a function, or
an ``nn.Module`` class, that builds the model (the contract is in
:mod:`edgecode.learning.torch_model`):

* ``torch:mypkg.models:small_cnn`` imports the module ``mypkg.models`` (installed, or on
  ``PYTHONPATH``) and takes its attribute ``small_cnn``;
* ``torch:examples/torch/models.py:small_mlp`` loads that file (a source containing ``/`` or
  ending in ``.py`` is a file; a relative path is relative to the working directory). A file is
  loaded on its own, under a private module name; it is reloaded when it changes on disk.

The function name is split off at the LAST colon, so a Windows path works. The referenced code
runs with the privileges of the process that loads it: a service should take references only
from authenticated users, and may confine file references to directories (``roots``).

Example
-------
>>> ref = parse_model_reference("torch:examples/torch/models.py:small_mlp")
>>> ref.source, ref.function, ref.is_file
('examples/torch/models.py', 'small_mlp', True)
>>> parse_model_reference("torch:mypkg.models:small_cnn").is_file
False
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgecode.errors import BadModel

#: Prefix of a PyTorch model reference.
TORCH_PREFIX = "torch:"
#: What to tell a user whose node lacks torch.
INSTALL_HINT = "PyTorch is not installed on this node: pip install 'edgecode[torch]'"

_FILE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelReference:
    """A parsed reference: ``text`` as given, ``source`` (module path or file), ``function``."""

    text: str
    source: str
    function: str
    is_file: bool


def parse_model_reference(ref: str) -> ModelReference:
    """Split ``torch:SOURCE:FUNCTION``; raise ``BadModel`` naming ``ref`` when malformed."""
    if not isinstance(ref, str) or not ref.startswith(TORCH_PREFIX):
        raise BadModel(f"model reference must start with {TORCH_PREFIX!r}, got {ref!r}")
    source, sep, function = ref[len(TORCH_PREFIX) :].rpartition(":")
    if not sep or not source or not function.isidentifier():
        raise BadModel(
            f"model reference {ref!r} must look like {TORCH_PREFIX}MODULE:FUNCTION or "
            f"{TORCH_PREFIX}PATH.py:FUNCTION (FUNCTION a Python name)"
        )
    is_file = "/" in source or "\\" in source or source.endswith(".py")
    return ModelReference(ref, source, function, is_file)


def load_model_function(
    ref: str | ModelReference, roots: Sequence[str | Path] | None = None
) -> Callable[..., Any]:
    """Import the reference's module (or file) and return its callable; ``BadModel`` otherwise.

    ``roots``, when given, are the directories a FILE reference must lie in (after resolving
    symbolic links); module references are installed code and are not confined.
    """
    parsed = ref if isinstance(ref, ModelReference) else parse_model_reference(ref)
    module = _import_file(parsed, roots) if parsed.is_file else _import_module(parsed)
    function = getattr(module, parsed.function, None)
    if function is None:
        raise BadModel(f"model {parsed.text!r}: {parsed.source!r} has no {parsed.function!r}")
    if not callable(function):
        raise BadModel(
            f"model {parsed.text!r}: {parsed.function!r} is a {type(function).__name__}, not a "
            "function returning a torch.nn.Module"
        )
    return function  # type: ignore[no-any-return]


def check_model_reference(
    name: str,
    n_features: int | None = None,
    n_classes: int | None = None,
    roots: Sequence[str | Path] | None = None,
) -> None:
    """Raise unless ``name`` names a usable model; meant for job submission.

    A built-in name is checked against the registry (``ValueError``). A torch reference
    (``BadModel``) is imported and its function looked up; given ``n_features`` and ``n_classes``
    the module is also built, run forward and backward on a two-row batch, and its output shape
    and loss checked.

    >>> check_model_reference("softmax")
    >>> check_model_reference("torch:no_such_module_here:f")
    Traceback (most recent call last):
    ...
    edgecode.errors.BadModel: model 'torch:no_such_module_here:f': cannot import module 'no_such_module_here' (No module named 'no_such_module_here'); is it installed on this node?
    """
    if not name.startswith(TORCH_PREFIX):
        from edgecode.learning.models import MODEL_NAMES

        if name not in MODEL_NAMES:
            raise ValueError(
                f"name must be one of {list(MODEL_NAMES)} or {TORCH_PREFIX}MODULE:FUNCTION, "
                f"got {name!r}"
            )
        return
    parsed = parse_model_reference(name)
    adapter = torch_adapter()
    load_model_function(parsed, roots)
    if (n_features is None) != (n_classes is None):
        raise ValueError("n_features and n_classes must be given together, or neither")
    if n_features is not None and n_classes is not None:
        adapter.check_built(name, n_features, n_classes, roots=roots)


def torch_adapter() -> ModuleType:
    """The adapter module :mod:`edgecode.learning.torch_model`, imported on first use."""
    try:
        from edgecode.learning import torch_model
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise BadModel(f"a {TORCH_PREFIX} model needs torch: {INSTALL_HINT}") from None
    return torch_model


def _import_module(ref: ModelReference) -> ModuleType:
    try:
        return importlib.import_module(ref.source)
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise BadModel(f"model {ref.text!r}: {INSTALL_HINT}") from None
        raise BadModel(
            f"model {ref.text!r}: cannot import module {ref.source!r} ({exc}); is it installed "
            "on this node?"
        ) from None
    except (Exception, SystemExit) as exc:
        raise BadModel(
            f"model {ref.text!r}: importing {ref.source!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(ref: ModelReference, roots: Sequence[str | Path] | None) -> ModuleType:
    try:
        path = Path(ref.source).expanduser().resolve(strict=True)
    except OSError:
        raise BadModel(
            f"model {ref.text!r}: no such file {ref.source!r} (relative to {Path.cwd()})"
        ) from None
    if not path.is_file():
        raise BadModel(f"model {ref.text!r}: {str(path)!r} is not a file")
    if roots is not None and not any(path.is_relative_to(Path(r).resolve()) for r in roots):
        raise BadModel(
            f"model {ref.text!r}: {str(path)!r} is outside the model directories "
            f"{[str(r) for r in roots]}"
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}".encode()).hexdigest()
    name = f"_edgecode_model_{key[:16]}"
    with _FILE_LOCK:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise BadModel(f"model {ref.text!r}: {str(path)!r} cannot be loaded as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses and pickling look it up
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[name]
            if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
                raise BadModel(f"model {ref.text!r}: {INSTALL_HINT}") from None
            raise BadModel(
                f"model {ref.text!r}: loading {str(path)!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    return module
