"""scripts/mutate.py --resume without mutmut: which stored verdicts a resumed run keeps, and
that it refuses a module whose source changed since."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = "edgecode/m.py"
TESTS = ["tests/unit/test_m.py"]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate", REPO / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repository(root: Path, source: str, test: str) -> None:
    (root / "services" / "edgecode").mkdir(parents=True)
    (root / "tests" / "unit").mkdir(parents=True)
    (root / "services" / MODULE).write_text(source)
    (root / TESTS[0]).write_text(test)
    (root / "tests" / "conftest.py").write_text("# shared fixtures\n")


def _stored_run(script: ModuleType, root: Path, workdir: Path, codes: dict[str, object]) -> None:
    """What a staged, stopped run leaves: the fingerprint and mutmut's result file."""
    meta = workdir / "mutants" / "src" / f"{MODULE}.meta"
    meta.parent.mkdir(parents=True)
    data = {
        "exit_code_by_key": codes,
        "hash_by_function_name": {"x_f": "abc"},
        "type_check_error_by_key": {},
        "durations_by_key": {name: 0.5 for name, code in codes.items() if code is not None},
        "estimated_durations_by_key": {name: 1.0 for name in codes},
    }
    meta.write_text(json.dumps(data))
    stamp = script.fingerprint(root, root / "services" / MODULE, TESTS)
    (workdir / script.FINGERPRINT).write_text(json.dumps(stamp))


CODES = {"kill": 1, "timeout": -24, "survivor": 0, "no_tests": 33, "unchecked": None}


def test_kills_always_stand_survivors_only_while_the_tests_are_unchanged(
    script: ModuleType,
) -> None:
    same = script.carried_results(CODES, tests_changed=False)
    changed = script.carried_results(CODES, tests_changed=True)
    assert same == CODES
    assert changed == {
        "kill": 1,
        "timeout": -24,
        "survivor": None,
        "no_tests": None,
        "unchecked": None,
    }
    # an accepted equivalent mutant keeps its verdict: no test can kill it
    kept = script.carried_results(CODES, tests_changed=True, equivalent=["survivor", "unchecked"])
    assert kept == {**changed, "survivor": 0}


def test_a_staged_copy_hashes_like_the_repository(script: ModuleType, tmp_path: Path) -> None:
    """The staged conftest carries the import-cache shim; the fingerprint leaves it out."""
    repo, staged = tmp_path / "repo", tmp_path / "staged"
    _repository(repo, "x = 1\n", "def test(): pass\n")
    _repository(staged, "x = 1\n", "def test(): pass\n")
    conftest = staged / "tests" / "conftest.py"
    conftest.write_text(conftest.read_text() + script.CONFTEST_SHIM)
    source = "services/" + MODULE
    assert script.fingerprint(repo, repo / source, TESTS) == script.fingerprint(
        staged, staged / source, TESTS
    )
    (staged / TESTS[0]).write_text("def test(): assert False\n")
    after = script.fingerprint(staged, staged / source, TESTS)
    before = script.fingerprint(repo, repo / source, TESTS)
    assert after["module"] == before["module"] and after["tests"] != before["tests"]


@pytest.mark.parametrize("test_changed", [False, True])
def test_resume_seeds_the_verdicts_that_hold(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_changed: bool
) -> None:
    _repository(tmp_path, "x = 1\n", "def test(): pass\n")
    workdir = tmp_path / "out" / "m"
    _stored_run(script, tmp_path, workdir, CODES)
    if test_changed:
        (tmp_path / TESTS[0]).write_text("def test(): pass\n\ndef test_more(): pass\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    seed, carried = script.previous_results(workdir, MODULE, TESTS)
    expected = script.carried_results(CODES, tests_changed=test_changed)
    assert seed["exit_code_by_key"] == expected
    assert (
        carried == sum(code is not None for code in expected.values()) == (2 if test_changed else 4)
    )
    assert seed["hash_by_function_name"] == {"x_f": "abc"}
    assert set(seed["durations_by_key"]) == {n for n, c in expected.items() if c is not None}


def test_resume_refuses_a_changed_module(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repository(tmp_path, "x = 1\n", "def test(): pass\n")
    workdir = tmp_path / "out" / "m"
    _stored_run(script, tmp_path, workdir, CODES)
    (tmp_path / "services" / MODULE).write_text("x = 2\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match=r"edgecode/m\.py: cannot resume, the source changed"):
        script.previous_results(workdir, MODULE, TESTS)


def test_resume_without_stored_results_starts_afresh(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repository(tmp_path, "x = 1\n", "def test(): pass\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    assert script.previous_results(tmp_path / "out" / "m", MODULE, TESTS) == ({}, 0)


def test_a_run_staged_before_fingerprints_hashes_its_staged_copies(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fingerprint stored: the staged source and tests in the workdir stand for it."""
    _repository(tmp_path, "x = 1\n", "def test(): pass\n")
    workdir = tmp_path / "out" / "m"
    _stored_run(script, tmp_path, workdir, CODES)
    (workdir / script.FINGERPRINT).unlink()
    (workdir / "src" / "edgecode").mkdir(parents=True)
    (workdir / "tests" / "unit").mkdir(parents=True)
    (workdir / "src" / MODULE).write_text("x = 1\n")
    (workdir / TESTS[0]).write_text("def test(): pass\n")
    (workdir / "tests" / "conftest.py").write_text("# shared fixtures\n" + script.CONFTEST_SHIM)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    seed, carried = script.previous_results(workdir, MODULE, TESTS)
    assert seed["exit_code_by_key"] == CODES and carried == 4
    (workdir / "src" / MODULE).write_text("x = 3\n")
    with pytest.raises(SystemExit, match="cannot resume"):
        script.previous_results(workdir, MODULE, TESTS)


def _report(**fields: object) -> dict[str, object]:
    report: dict[str, object] = {
        "module": MODULE,
        "mutants": 10,
        "equivalent": ["x_f__mutmut_3"],
        "killed": 8,
        "timeouts": 1,
        "survivors": {"x_f__mutmut_9": "[survived] ..."},
        "score": 8 / 9,
        "minutes": 1.5,
        "finished": True,
        "carried": 4,
    }
    return report | fields


def test_a_module_the_time_limit_reached_first_is_not_run_not_full_marks(
    script: ModuleType,
) -> None:
    """collect() scores a module without verdicts 1.0 (nothing survived); the line must not
    print that as "0/0 killed (100.0 %)"."""
    line = script.summary(
        _report(mutants=0, equivalent=[], killed=0, timeouts=0, score=1.0, finished=False), False
    )
    assert line == f"{MODULE}: not run (the time limit came before its mutants), 1.5 min"


def test_a_tested_module_prints_killed_of_counted(script: ModuleType) -> None:
    assert script.summary(_report(), True) == (
        f"{MODULE}: 8/9 killed (88.9 %, 1 by timeout, 1 accepted equivalent), 1.5 min"
        " (4 verdicts kept from the earlier run)"
    )
    stopped = script.summary(_report(finished=False), False)
    assert stopped.endswith("1.5 min - STOPPED at the time limit"), stopped
