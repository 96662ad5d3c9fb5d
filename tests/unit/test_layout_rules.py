"""The house rules, checked from the source (ast), so the house stays standing (issue 9).

- nothing under ``runtime/`` imports a role; no role imports another role;
- ``grpc``, protobuf and the generated ``edgecode.v1`` are imported only in ``wire/``,
  ``runtime/``, ``cluster/``, ``bench/``, ``cli/`` and a role's ``service.py``, ``transport.py``,
  ``client.py`` and ``run.py``; protobuf never passes through a ``logic.py`` (no v1, grpc,
  protobuf or wire import there);
- the pure core (codes, stragglers, planning, learning, sim, rounds, records, errors) imports only
  numpy, scipy, the standard library and itself;
- nothing but the CLI (and ``__main__``) imports ``cli``;
- no import cycles (among the imports that run when a module is imported);
- no module over 600 lines, no function over 80, except the allow-listed ones (each with its
  reason; an entry that is no longer needed fails too, so the list only shrinks).

Every violation is reported as ``file:line: what``. The checker itself is tested on small
synthetic trees (one violation per rule) so that each rule is known to be able to fail.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "services"
ROLES = ("coordinator", "master", "aggregator", "worker", "peer")
CORE = (
    "codes",
    "stragglers",
    "straggle_classes",
    "emulation",
    "gossip_records",
    "planning",
    "learning",
    "sim",
    "rounds",
    "rules",
    "verification",
    "records",
    "errors",
)
#: where grpc / protobuf / edgecode.v1 may be imported: these folders, and files of these names
GRPC_FOLDERS = ("wire", "runtime", "cluster", "bench", "cli")
GRPC_FILES = ("service.py", "transport.py", "client.py", "run.py")
#: top-level packages that are gRPC or protobuf
GRPC_PACKAGES = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "grpc_tools", "google")
CORE_THIRD_PARTY = ("numpy", "scipy")
#: (file, package): why the core may import it
CORE_EXTRAS = {
    ("learning/datasets.py", "sklearn"): (
        "the bundled real data sets come from scikit-learn; imported lazily inside load_bundled"
    ),
    ("sim/figures.py", "matplotlib"): (
        "figures of simulated runs; only the CLI imports this module (sim/__init__ does not)"
    ),
    ("sim/goco.py", "matplotlib"): "the gossip figure; imported inside the plotting function",
    ("sim/shuffle_figures.py", "matplotlib"): (
        "figures of the shuffle simulation; only the bench imports this module"
    ),
    ("learning/torch_model.py", "torch"): (
        "the optional PyTorch adapter (the torch extra); loaded only for a torch: model reference"
    ),
}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: file: why it may exceed MAX_MODULE_LINES
LONG_MODULES = {
    "codes/partial.py": "cohesive paper module: the partial-recovery codes of one paper",
    "codes/matrix.py": "cohesive paper module: the coded sparse matrix codes of one paper",
    "planning/timing.py": "existing violator (issue 9): exact and Monte Carlo round time, to split",
    "learning/datasets.py": "existing violator (issue 9): data set loaders, to split",
    "learning/models.py": "the model interface and its three numpy models, with coded_gradient",
    "learning/gossip.py": "cohesive paper module: GOCO's graphs, mixing matrices and step",
}
#: (file, qualified function name): why it may exceed MAX_FUNCTION_LINES
LONG_FUNCTIONS = {
    ("bench/matmul.py", "bench_matrix"): "existing violator (issue 9): one benchmark, to split",
    ("cli/plan.py", "show_plan"): "existing violator (issue 9): a table renderer, to split",
    ("cli/report.py", "run"): "existing violator (issue 9): the report command, to split",
    ("codes/hierarchical.py", "hierarchical_from_counts"): (
        "paper construction, condition by condition as in papers.md"
    ),
    ("codes/matrix.py", "sparse_mm_code"): "paper construction: the weight search of one paper",
    ("runtime/metrics.py", "MasterMetrics.__init__"): (
        "existing violator (issue 9): one declaration per metric, to split"
    ),
}


# ---- reading the source ------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the package folder, e.g. "master/logic.py"
    line: int
    target: str  # absolute module name, e.g. "edgecode.rounds" or "numpy.linalg"
    lazy: bool  # inside a function: runs on call, not on import
    type_only: bool  # under ``if TYPE_CHECKING:``

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def where(self) -> str:
        return f"edgecode/{self.file}:{self.line}"


@dataclass(frozen=True)
class Source:
    root: Path  # the folder holding the ``edgecode`` package

    @property
    def package(self) -> Path:
        return self.root / "edgecode"

    def files(self) -> list[str]:
        return sorted(
            p.relative_to(self.package).as_posix()
            for p in self.package.rglob("*.py")
            if "v1" not in p.relative_to(self.package).parts
        )

    def module(self, file: str) -> str:
        parts = ["edgecode", *file[: -len(".py")].split("/")]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def is_module(self, name: str) -> bool:
        if not name.startswith("edgecode"):
            return False
        path = self.root.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    def tree(self, file: str) -> ast.Module:
        return _parse(self.package / file)

    def imports(self, file: str) -> list[Import]:
        return _imports(self, file)

    def _read_imports(self, file: str) -> list[Import]:
        found: list[Import] = []
        module = self.module(file)
        # relative imports resolve against the package: the module itself for an __init__.py
        package = module if file.endswith("__init__.py") else module.rpartition(".")[0]
        self._visit(self.tree(file), file, package, False, False, found)
        return found

    def _visit(
        self, node: ast.AST, file: str, package: str, lazy: bool, typing: bool, out: list[Import]
    ) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                self._visit(child, file, package, True, typing, out)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    self._visit(ast.Module([statement], []), file, package, lazy, True, out)
                for statement in child.orelse:
                    self._visit(ast.Module([statement], []), file, package, lazy, typing, out)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(file, child.lineno, alias.name, lazy, typing))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    candidate = f"{base}.{alias.name}"
                    target = candidate if self.is_module(candidate) else base
                    out.append(Import(file, child.lineno, target, lazy, typing))
            else:
                self._visit(child, file, package, lazy, typing, out)


@functools.cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@functools.cache
def _imports(source: Source, file: str) -> list[Import]:
    return source._read_imports(file)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _area(file: str) -> str:
    """The first path part: a subpackage name, or a module name without .py."""
    return file.split("/")[0].removesuffix(".py")


def _edgecode_area(target: str) -> str | None:
    parts = target.split(".")
    return parts[1] if parts[0] == "edgecode" and len(parts) > 1 else None


def _is_grpc(imp: Import) -> bool:
    if imp.top == "google":
        return imp.target.startswith("google.protobuf")
    return imp.top in GRPC_PACKAGES or imp.target.startswith("edgecode.v1")


# ---- the rules ---------------------------------------------------------------------------------


def runtime_imports_no_role(source: Source) -> list[str]:
    return [
        f"{imp.where()}: runtime imports the role {imp.target}"
        for file in source.files()
        if _area(file) == "runtime"
        for imp in source.imports(file)
        if _edgecode_area(imp.target) in ROLES
    ]


def roles_import_no_other_role(source: Source) -> list[str]:
    out = []
    for file in source.files():
        role = _area(file)
        if role not in ROLES:
            continue
        for imp in source.imports(file):
            other = _edgecode_area(imp.target)
            if other in ROLES and other != role:
                out.append(f"{imp.where()}: the {role} role imports another role, {imp.target}")
    return out


def grpc_only_at_the_edges(source: Source) -> list[str]:
    out = []
    for file in source.files():
        if _area(file) in GRPC_FOLDERS or file.rsplit("/", 1)[-1] in GRPC_FILES:
            continue
        for imp in source.imports(file):
            if _is_grpc(imp):
                out.append(
                    f"{imp.where()}: imports {imp.target} (gRPC / protobuf / edgecode.v1 only in "
                    f"{', '.join(GRPC_FOLDERS)} and {', '.join(GRPC_FILES)})"
                )
    return out


def no_protobuf_in_logic(source: Source) -> list[str]:
    return [
        f"{imp.where()}: a logic.py imports {imp.target} (protobuf never passes through logic)"
        for file in source.files()
        if file.endswith("logic.py")
        for imp in source.imports(file)
        if _is_grpc(imp) or _edgecode_area(imp.target) == "wire"
    ]


STDLIB = frozenset(sys.stdlib_module_names)


def core_is_pure(source: Source) -> list[str]:
    out = []
    for file in source.files():
        if _area(file) not in CORE:
            continue
        for imp in source.imports(file):
            area = _edgecode_area(imp.target)
            if imp.top == "edgecode" and (area in CORE or imp.target == "edgecode"):
                continue
            if imp.top in STDLIB or imp.top in CORE_THIRD_PARTY:
                continue
            if (file, imp.top) in CORE_EXTRAS:
                continue
            out.append(
                f"{imp.where()}: the pure core imports {imp.target} (only numpy, scipy, the "
                "standard library and the core)"
            )
    return out


def nothing_imports_the_cli(source: Source) -> list[str]:
    return [
        f"{imp.where()}: imports {imp.target} (nothing but the CLI imports cli)"
        for file in source.files()
        if _area(file) not in ("cli", "__main__")
        for imp in source.imports(file)
        if _edgecode_area(imp.target) == "cli"
    ]


def import_cycles(source: Source) -> list[str]:
    """Cycles among the imports that run at import time (not lazy, not TYPE_CHECKING)."""
    files = {source.module(f): f for f in source.files()}
    edges: dict[str, list[Import]] = {
        module: [
            imp
            for imp in source.imports(file)
            if not imp.lazy and not imp.type_only and imp.target in files and imp.target != module
        ]
        for module, file in files.items()
    }
    out: list[str] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[tuple[str, Import | None]] = []

    def visit(module: str) -> None:
        state[module] = 1
        for imp in edges[module]:
            stack.append((module, imp))
            if state.get(imp.target) == 1:
                start = next(i for i, (m, _) in enumerate(stack) if m == imp.target)
                cycle = stack[start:]
                key = frozenset(m for m, _ in cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    path = " -> ".join(f"{i.where()} ({i.target})" for _, i in cycle if i)
                    out.append(f"import cycle: {path}")
            elif imp.target not in state:
                visit(imp.target)
            stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return out


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def sizes(source: Source) -> tuple[list[str], set[str], set[tuple[str, str]]]:
    """(violations, long modules found, long functions found)."""
    out, long_modules, long_functions = [], set(), set()
    for file in source.files():
        lines = len((source.package / file).read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.add(file)
            if file not in LONG_MODULES:
                out.append(f"edgecode/{file}:1: {lines} lines (at most {MAX_MODULE_LINES})")
        for name, node in _functions(source.tree(file)):
            length = int(node.end_lineno or node.lineno) - int(node.lineno) + 1  # type: ignore[attr-defined]
            if length > MAX_FUNCTION_LINES:
                long_functions.add((file, name))
                if (file, name) not in LONG_FUNCTIONS:
                    out.append(
                        f"edgecode/{file}:{node.lineno}: function {name} has {length} lines "  # type: ignore[attr-defined]
                        f"(at most {MAX_FUNCTION_LINES})"
                    )
    return out, long_modules, long_functions


RULES = {
    "runtime imports no role": runtime_imports_no_role,
    "no role imports another": roles_import_no_other_role,
    "grpc only at the edges": grpc_only_at_the_edges,
    "no protobuf in logic.py": no_protobuf_in_logic,
    "the core is pure": core_is_pure,
    "nothing imports the cli": nothing_imports_the_cli,
    "no import cycles": import_cycles,
}


# ---- the house ---------------------------------------------------------------------------------

HOUSE = Source(SOURCE_ROOT)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_house_keeps_its_rule(rule: str) -> None:
    violations = RULES[rule](HOUSE)
    assert not violations, "\n".join(violations)


def test_no_module_or_function_is_too_long() -> None:
    violations, _, _ = sizes(HOUSE)
    assert not violations, "\n".join(violations)


def test_every_size_exception_is_still_needed() -> None:
    _, long_modules, long_functions = sizes(HOUSE)
    stale = sorted(set(LONG_MODULES) - long_modules) + sorted(
        f"{file}:{name}" for file, name in set(LONG_FUNCTIONS) - long_functions
    )
    assert not stale, f"remove these allow-list entries, they are short now: {stale}"
    assert all(reason.strip() for reason in (*LONG_MODULES.values(), *LONG_FUNCTIONS.values()))


def test_the_checker_sees_the_whole_house() -> None:
    files = HOUSE.files()
    assert "rounds.py" in files and "master/logic.py" in files and "wire/messages.py" in files
    assert not any(f.startswith("v1/") for f in files)
    imports = HOUSE.imports("master/training.py")
    assert any(i.target == "edgecode.rounds" and not i.lazy for i in imports)
    lazy = HOUSE.imports("records.py")
    assert any(i.target == "edgecode.learning.datasets" and i.lazy for i in lazy)


# ---- the checker can fail: one violation per rule in a synthetic house -------------------------


def build(tmp_path: Path, files: dict[str, str]) -> Source:
    base = {
        "__init__.py": "",
        "errors.py": "",
        "rounds.py": "import numpy\nfrom edgecode import errors\n",
        "runtime/__init__.py": "",
        "runtime/server.py": "import grpc\n",
        "master/__init__.py": "",
        "master/logic.py": "from edgecode.rounds import errors\n",
        "master/service.py": "import grpc\nfrom edgecode.v1 import master_pb2\n",
        "worker/__init__.py": "",
        "worker/logic.py": "import threading\n",
        "cli/__init__.py": "",
        "v1/__init__.py": "",
        "v1/master_pb2.py": "import google.protobuf\n",
        "wire/__init__.py": "from edgecode.v1 import master_pb2\n",
    }
    base.update(files)
    for name, text in base.items():
        path = tmp_path / "edgecode" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Source(tmp_path)


def test_a_clean_synthetic_house_passes(tmp_path: Path) -> None:
    source = build(tmp_path, {})
    assert {name: rule(source) for name, rule in RULES.items()} == {name: [] for name in RULES}


@pytest.mark.parametrize(
    ("rule", "files", "expected"),
    [
        (
            "runtime imports no role",
            {"runtime/start.py": "import os\nfrom edgecode.master import logic\n"},
            "edgecode/runtime/start.py:2: runtime imports the role edgecode.master.logic",
        ),
        (
            "no role imports another",
            {"worker/logic.py": "def f():\n    import edgecode.master.logic\n"},
            "edgecode/worker/logic.py:2: the worker role imports another role",
        ),
        (
            "no role imports another",
            {"master/run.py": "from ..worker import logic\n"},
            "edgecode/master/run.py:1: the master role imports another role, edgecode.worker.logic",
        ),
        (
            "grpc only at the edges",
            {"master/logic.py": "\n\nimport grpc\n"},
            "edgecode/master/logic.py:3: imports grpc",
        ),
        (
            "grpc only at the edges",
            {"rounds.py": "from edgecode.v1 import master_pb2\n"},
            "edgecode/rounds.py:1: imports edgecode.v1.master_pb2",
        ),
        (
            "grpc only at the edges",
            {"master/layout.py": "from google.protobuf import json_format\n"},
            "edgecode/master/layout.py:1: imports google.protobuf",
        ),
        (
            "no protobuf in logic.py",
            {"worker/logic.py": "from edgecode import wire\n"},
            "edgecode/worker/logic.py:1: a logic.py imports edgecode.wire",
        ),
        (
            "the core is pure",
            {"rounds.py": "import prometheus_client\n"},
            "edgecode/rounds.py:1: the pure core imports prometheus_client",
        ),
        (
            "the core is pure",
            {"codes/__init__.py": "", "codes/flat.py": "from edgecode.master import ports\n"},
            "edgecode/codes/flat.py:1: the pure core imports edgecode.master",
        ),
        (
            "the core is pure",
            {"errors.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grpc\n"},
            "edgecode/errors.py:3: the pure core imports grpc",
        ),
        (
            "nothing imports the cli",
            {"cluster/__init__.py": "", "cluster/local.py": "import edgecode.cli\n"},
            "edgecode/cluster/local.py:1: imports edgecode.cli",
        ),
        (
            "no import cycles",
            {
                "codes/__init__.py": "",
                "codes/a.py": "from edgecode.codes import b\n",
                "codes/b.py": "import os\nfrom edgecode.codes.a import x\n",
            },
            "import cycle: edgecode/codes/a.py:1 (edgecode.codes.b) -> "
            "edgecode/codes/b.py:2 (edgecode.codes.a)",
        ),
    ],
)
def test_each_rule_reports_the_offending_line(
    tmp_path: Path, rule: str, files: dict[str, str], expected: str
) -> None:
    violations = RULES[rule](build(tmp_path, files))
    assert any(v.startswith(expected) for v in violations), violations


def test_lazy_and_type_only_imports_make_no_cycle(tmp_path: Path) -> None:
    source = build(
        tmp_path,
        {
            "codes/__init__.py": "",
            "codes/a.py": "from edgecode.codes import b\n",
            "codes/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from edgecode.codes import a\n"
                "def f():\n    from edgecode.codes import a\n"
            ),
        },
    )
    assert import_cycles(source) == []


def test_sizes_report_long_modules_and_functions(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = build(
        tmp_path,
        {
            "stragglers.py": "\n" * MAX_MODULE_LINES + "x = 1\n",
            "worker/straggle.py": f"class C:\n    def m(self):\n{body}\n",
        },
    )
    violations, _, _ = sizes(source)
    assert f"edgecode/stragglers.py:1: {MAX_MODULE_LINES + 1} lines" in "\n".join(violations)
    assert any(
        v.startswith("edgecode/worker/straggle.py:2: function C.m has 81 lines") for v in violations
    )
