#!/usr/bin/env python3
"""Mutation testing of the numeric core with mutmut 3, on demand (not in CI).

    pip install -e '.[mutation]'
    python scripts/mutate.py edgecode/codes/_linalg.py edgecode/codes/flat.py
    python scripts/mutate.py --all            # every module listed in pyproject.toml

For every module, mutmut changes one operator, constant or argument at a time ("mutant") and
runs the module's fast tests (listed in ``[tool.edgecode.mutation.tests]`` of pyproject.toml);
a mutant is *killed* when a test fails (or times out), *survives* when every test passes.

Why a staging directory: mutmut 3 derives a mutant's module name from its file path and only
understands the ./, src/ and source/ layouts, while edgecode's source root is services/. So
the script copies services/edgecode to <workdir>/src/edgecode and tests/ to <workdir>/tests,
writes a pyproject.toml there with the repository's pytest settings and a generated
``[tool.mutmut]`` section, and runs mutmut in <workdir> under ``nice -n 19``. A small shim
appended to the staged tests/conftest.py clears the import caches: mutmut creates
mutants/src after the interpreter has cached that path entry as missing, and the tests would
otherwise import the installed edgecode instead of the mutants.

The score per module is (killed + timed out) / (mutants - accepted equivalent mutants); the
accepted ones are listed with a reason each in ``[tool.edgecode.mutation.equivalent]`` (and in
docs/notes/mutation.md). A mutant whose module's tests never run it ("no tests") counts as a
survivor. Results go to <workdir>/report.json and a table on stdout; survivors are printed
with their diff. Exit code 1 if a module scores below the configured ``minimum_score``.

Resuming (``--resume``): a run stopped at ``--minutes`` need not start over. Staging stores a
fingerprint beside the results (<workdir>/<module>/mutate-fingerprint.json: sha256 of the
module and of its test files with tests/conftest.py). A resumed run refuses a module whose
source changed (the mutants would not be the same), re-stages sources and tests afresh (new
tests are collected like any others) and seeds mutmut's result file with the earlier verdicts
it may keep: every kill (added tests only kill more; a test weakened since is not detected),
the verdicts of accepted equivalent mutants (no test kills them), and the other verdicts
only while the tests are byte-identical. mutmut then checks just the rest ("not checked"
and, after a test change, the survivors). The report counts the kept and the new verdicts
together; ``carried`` says how many were kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFTEST_SHIM = """

# --- added by scripts/mutate.py: mutmut creates mutants/src after the interpreter cached that
# path entry as missing; without this the tests import the installed edgecode.
import importlib as _mutate_importlib
import sys as _mutate_sys

_mutate_sys.path_importer_cache.clear()
_mutate_importlib.invalidate_caches()

import pytest as _mutate_pytest


@_mutate_pytest.fixture(autouse=True)
def _mutate_fresh_caches():
    # Module-level caches (functools.lru_cache) filled while mutmut collected its statistics
    # would hand every mutant the original results: clear them before each test.
    for module in list(_mutate_sys.modules.values()):
        if getattr(module, "__name__", "").startswith("edgecode"):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()
    yield
"""
FINGERPRINT = "mutate-fingerprint.json"
KILLED = {1, 3, 36, -24, 24, 152, 255}  # test failure, pytest internal error, timeouts
TIMEOUTS = {36, -24, 24, 152, 255}


def load_config() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        "pytest": data["tool"]["pytest"]["ini_options"],
        "mutation": data["tool"]["edgecode"]["mutation"],
    }


def toml_value(value: object) -> str:
    return json.dumps(value)  # TOML strings, lists and numbers read like JSON here


def stage(
    workdir: Path,
    modules: list[str],
    tests: list[str],
    pytest_options: dict,
    timeout_multiplier: float,
) -> None:
    """Copy the sources and tests into ``workdir`` in the src/ layout mutmut understands."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "src").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "services" / "edgecode", workdir / "src" / "edgecode", ignore=ignore)
    shutil.copytree(ROOT / "tests", workdir / "tests", ignore=ignore)
    conftest = workdir / "tests" / "conftest.py"
    conftest.write_text(conftest.read_text() + CONFTEST_SHIM)
    options = dict(pytest_options)
    options.pop("timeout", None)  # mutmut times each mutant itself
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
    lines += [
        "",
        "[tool.mutmut]",
        'source_paths = ["src/edgecode"]',
        f"only_mutate = {toml_value(['src/' + m for m in modules])}",
        f"pytest_add_cli_args_test_selection = {toml_value(tests)}",
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]',
        f"timeout_multiplier = {timeout_multiplier}",
        "",
    ]
    (workdir / "pyproject.toml").write_text("\n".join(lines))
    source = ROOT / "services" / modules[0]
    (workdir / FINGERPRINT).write_text(json.dumps(fingerprint(ROOT, source, tests), indent=2))


def fingerprint(root: Path, source: Path, tests: list[str]) -> dict[str, str]:
    """sha256 of the module ``source`` and of its ``tests`` (paths below ``root``) together with
    ``root``/tests/conftest.py (a staged copy's shim is left out, so both copies hash alike)."""
    digest = hashlib.sha256()
    for name in [*sorted(tests), "tests/conftest.py"]:
        text = (root / name).read_text()
        digest.update(name.encode() + b"\0" + text.removesuffix(CONFTEST_SHIM).encode() + b"\0")
    return {
        "module": hashlib.sha256(source.read_bytes()).hexdigest(),
        "tests": digest.hexdigest(),
    }


def carried_results(
    codes: dict[str, int | None], tests_changed: bool, equivalent: Iterable[str] = ()
) -> dict[str, int | None]:
    """The stored verdicts a resumed run keeps; None makes mutmut check that mutant again.

    A kill stands whatever was added to the tests; a survivor (or "no tests") stands only
    while the tests are unchanged, since a new test may kill it, or if it is an accepted
    ``equivalent`` mutant, which no test can kill (and which the score leaves out)."""
    accepted = set(equivalent)
    return {
        name: code
        if code in KILLED or (code is not None and (not tests_changed or name in accepted))
        else None
        for name, code in codes.items()
    }


def previous_results(
    workdir: Path, module: str, tests: list[str], equivalent: Iterable[str] = ()
) -> tuple[dict[str, object], int]:
    """The mutmut result file of an earlier run in ``workdir`` reduced to the verdicts that
    still hold, and how many they are; SystemExit if the module's source changed since."""
    meta = workdir / "mutants" / "src" / f"{module}.meta"
    if not meta.exists():
        print(f"{module}: nothing stored in {workdir}, starting afresh", flush=True)
        return {}, 0
    stored = workdir / FINGERPRINT
    if stored.exists():
        before = json.loads(stored.read_text())
    else:  # a run staged before fingerprints were stored: hash its staged copies
        before = fingerprint(workdir, workdir / "src" / module, tests)
    now = fingerprint(ROOT, ROOT / "services" / module, tests)
    if before["module"] != now["module"]:
        raise SystemExit(
            f"{module}: cannot resume, the source changed since the results in {workdir}"
            f" (sha256 {before['module'][:12]}, now {now['module'][:12]}); run without --resume"
        )
    data = json.loads(meta.read_text())
    changed = before["tests"] != now["tests"]
    codes = carried_results(data["exit_code_by_key"], changed, equivalent)
    durations = data.get("durations_by_key", {})
    seed = {
        "exit_code_by_key": codes,
        "hash_by_function_name": data["hash_by_function_name"],
        "type_check_error_by_key": {},
        "durations_by_key": {k: v for k, v in durations.items() if codes.get(k) is not None},
        "estimated_durations_by_key": {},
    }
    return seed, sum(code is not None for code in codes.values())


def run_mutmut(workdir: Path, children: int, deadline: float) -> bool:
    """Run mutmut until done or ``deadline`` (time.monotonic()); False if it was stopped."""
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run"]
    command += ["--max-children", str(children)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    with open(workdir / "mutmut.log", "w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return False
    return process.returncode == 0


def collect(workdir: Path, module: str, equivalent: dict[str, str]) -> dict[str, object]:
    """Tally the exit codes mutmut stored for ``module``; list survivors with their diff."""
    meta = workdir / "mutants" / "src" / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    accepted = sorted(name for name in codes if name in equivalent)
    counted = {name: code for name, code in codes.items() if name not in equivalent}
    killed = sorted(name for name, code in counted.items() if code in KILLED)
    survivors = sorted(name for name in counted if name not in killed)
    diffs = describe(workdir, module, survivors)
    return {
        "module": module,
        "mutants": len(codes),
        "equivalent": accepted,
        "killed": len(killed),
        "timeouts": sum(1 for name in killed if counted[name] in TIMEOUTS),
        "survivors": {
            name: f"[{STATUS.get(counted[name], str(counted[name]))}] {diffs.get(name, '')}"
            for name in survivors
        },
        "score": len(killed) / len(counted) if counted else 1.0,
    }


def summary(report: dict[str, Any], resumed: bool) -> str:
    """One line per module: killed of counted, the score, and how the run ended. A module
    the time limit reached before any of its mutants was tested is "not run", not 100 %."""
    module, minutes = report["module"], report["minutes"]
    if report["mutants"] == 0 and not report["finished"]:
        return f"{module}: not run (the time limit came before its mutants), {minutes} min"
    counted = report["mutants"] - len(report["equivalent"])
    return (
        f"{module}: {report['killed']}/{counted} killed ({100 * report['score']:.1f} %,"
        f" {report['timeouts']} by timeout, {len(report['equivalent'])} accepted equivalent),"
        f" {minutes} min"
        + (f" ({report['carried']} verdicts kept from the earlier run)" if resumed else "")
        + ("" if report["finished"] else " - STOPPED at the time limit")
    )


STATUS = {0: "survived", 5: "no tests", 33: "no tests", None: "not checked"}
DIFFS = """
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
path = Path(sys.argv[1])
for name in json.loads(sys.stdin.read()):
    lines = get_diff_for_mutant(name, path=path).splitlines()
    changed = [l for l in lines if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    print(json.dumps([name, " | ".join(changed)]))
"""


def describe(workdir: Path, module: str, names: list[str]) -> dict[str, str]:
    """The changed lines of each mutant, from one process (``mutmut show`` per mutant would
    rescan every file each time)."""
    if not names:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", DIFFS, f"src/{module}"],
        input=json.dumps(names),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return dict(json.loads(line) for line in shown.stdout.splitlines() if line.startswith("["))


def main() -> int:
    config = load_config()
    mutation = config["mutation"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", help="paths below services/, e.g. edgecode/codes/flat.py"
    )
    parser.add_argument("--all", action="store_true", help="every module in the configuration")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "mutation")
    parser.add_argument("--children", type=int, default=1, help="parallel mutmut workers")
    parser.add_argument("--minutes", type=float, default=40.0, help="stop everything after this")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the verdicts stored in --workdir that still hold (module unchanged; kills"
        " always, survivors while the tests are unchanged) and check only the other mutants",
    )
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=5.0,
        help="a mutant times out (counts as killed) after this many times its tests' CPU seconds"
        " (mutmut's limit is 2 x multiplier x (estimate + 1 s) of CPU time; mutmut's default 15"
        " spends minutes on each mutant that loops forever)",
    )
    args = parser.parse_args()
    tests_by_module: dict[str, list[str]] = mutation["tests"]
    modules = sorted(tests_by_module) if args.all else args.modules
    unknown = [m for m in modules if m not in tests_by_module]
    if not modules or unknown:
        parser.error(
            f"name modules from pyproject's [tool.edgecode.mutation.tests]: {unknown or 'none given'}"
        )
    equivalent: dict[str, str] = mutation.get("equivalent", {})
    deadline = time.monotonic() + 60 * args.minutes
    reports = []
    for module in modules:
        workdir = args.workdir / Path(module).stem
        tests = tests_by_module[module]
        seed, carried = (
            previous_results(workdir, module, tests, equivalent) if args.resume else ({}, 0)
        )
        stage(workdir, [module], tests, config["pytest"], args.timeout_multiplier)
        if seed:  # mutmut merges these with the mutants it generates (same function hashes)
            meta = workdir / "mutants" / "src" / f"{module}.meta"
            meta.parent.mkdir(parents=True)
            meta.write_text(json.dumps(seed, indent=4))
        started = time.monotonic()
        finished = run_mutmut(workdir, args.children, deadline)
        report = collect(workdir, module, equivalent)
        report["minutes"] = round((time.monotonic() - started) / 60, 1)
        report["finished"] = finished
        report["carried"] = carried
        reports.append(report)
        print(summary(report, args.resume), flush=True)
        for name, text in report["survivors"].items():
            print(f"    {name}: {text}")
        if time.monotonic() >= deadline:
            break
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "report.json").write_text(json.dumps(reports, indent=2))
    minimum = float(mutation.get("minimum_score", 0.9))
    return 0 if all(r["finished"] and r["score"] >= minimum for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
