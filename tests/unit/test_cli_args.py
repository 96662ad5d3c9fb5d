"""The CLI's argument checks: ``type=`` functions, the spec loader that names file and key,
role configs from flags / environment / TOML, gRPC errors as one line, and the documented
``--straggle`` grammar (README: ``exp:shift=0.1,rate=20``)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgecode.cli import _args
from edgecode.cli._config import resolve
from edgecode.cli._errors import RemoteError, UsageError, one_line, remote, report
from edgecode.cli._spec import load_cluster_spec

EXAMPLES = Path(__file__).parents[2] / "examples"


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("convert", "text", "message"),
    [
        (_args.integer(1), "0", "must be >= 1, got 0"),
        (_args.integer(0, 9), "10", "must be <= 9, got 10"),
        (_args.integer(0), "1.5", "expected an integer, got '1.5'"),
        (_args.number(above=0.0), "0", "must be > 0, got 0"),
        (_args.seconds, "-0.5", "must be >= 0, got -0.5"),
        (_args.seconds, "inf", "must be a finite number, got 'inf'"),
        (_args.seconds, "nan", "must be a finite number, got 'nan'"),
        (_args.seconds, "fast", "expected a number, got 'fast'"),
        (_args.choices_list(("a", "b")), "a,c", "expected a comma list of a,b, got 'a,c'"),
        (_args.choices_list(("a", "b")), " , ", "expected a comma list of a,b"),
        (_args.choices_list(("a", "b")), "a,a", "names a scheme twice"),
        (_args.integer_list(1), "3,0", "integers >= 1"),
        (_args.address, "localhost", "expected HOST:PORT, got 'localhost'"),
        (_args.address, "host:0", "port must be in [1, 65535], got 0"),
        (_args.address, "host:port", "expected HOST:PORT"),
        (_args.straggle, "exp:shift=-1", "shift must be >= 0"),
        (_args.straggle, "slow:factor=0.5", "slow_factor must be >= 1"),
        (_args.straggle, "bernoulli:p", "bad item 'p'"),
        (_args.dataset, "nosuch.csv", "data file not found: nosuch.csv"),
        (_args.dataset, "synthetic-lsq:n=1", "n must be >= 2"),
        (_args.dataset_syntax, "synthetic-lsq:n=1", "n must be >= 2"),
        (_args.model, "nosuch", "name must be one of"),
        (_args.model_syntax, "torch:nomodule", "must look like torch:MODULE:FUNCTION"),
        (_args.optimizer, "nosuch", "name must be one of"),
    ],
)
def test_bad_value_is_refused_with_its_reason(convert: Any, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        convert(text)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("convert", "text", "value"),
    [
        (_args.integer(1), "3", 3),
        (_args.number(above=0.0), "1e-3", 1e-3),
        (_args.choices_list(("a", "b")), " b, a ", ["b", "a"]),
        (_args.integer_list(1), "3,4", [3, 4]),
        (_args.address, "127.0.0.1:50051", "127.0.0.1:50051"),
        (_args.address, "[::1]:50051", "[::1]:50051"),
        (_args.address, "dns:///master:50051", "dns:///master:50051"),
        (_args.straggle, "exp:shift=0.1,rate=20", "exp:shift=0.1,rate=20"),
        (_args.dataset_syntax, "/data/on/the/master.csv", "/data/on/the/master.csv"),
        (_args.model_syntax, "torch:their_module:build", "torch:their_module:build"),
        (_args.optimizer, "adam:beta1=0.8", "adam:beta1=0.8"),
    ],
)
def test_good_value_passes(convert: Any, text: str, value: Any) -> None:
    assert convert(text) == value


def test_output_paths(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert _args.output_file(str(tmp_path / "new" / "deeper" / "out.json")).name == "out.json"
    assert _args.output_dir(str(tmp_path / "new" / "dir")).name == "dir"
    assert _args.figure_file(str(tmp_path / "plot.PNG")).suffix == ".PNG"
    for convert, text, message in [
        (_args.output_file, str(tmp_path), "is a folder"),
        (_args.output_file, str(plain / "x.json"), "is not a folder"),
        (_args.output_dir, str(plain), "exists and is not a folder"),
        (_args.output_dir, str(plain / "sub"), "is not a folder"),
        (_args.figure_file, str(tmp_path / "plot.txt"), "expected a file ending in one of"),
        (_args.existing_file, str(tmp_path / "none"), "does not exist"),
        (_args.existing_file, str(tmp_path), "is a folder"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            convert(text)


def test_parser_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _args.Parser(prog="edgecode x")
    parser.add_argument("--rounds", type=_args.integer(1), default=1)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--rounds", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("edgecode: error: argument --rounds: ")
    assert err.endswith("(see edgecode x --help)\n")


# --- the documented --straggle grammar (issue 19.1) ----------------------------------------------


def test_straggle_shift_as_documented() -> None:
    from edgecode.emulation import parse_straggle

    config = parse_straggle("exp:shift=0.1,rate=20", compute_seconds=0.05)
    assert (config.spec.shift, config.spec.rate) == (0.1, 20.0)
    assert config.emulates
    runtime = config.runtime(8)
    # the spec's shift is added to the emulated compute of the whole data set
    assert runtime.shift == pytest.approx(0.15) and runtime.rate == 20.0  # type: ignore[attr-defined]
    assert parse_straggle("exp:rate=20").spec.shift == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exp:link_seconds=1", "bad item 'link_seconds=1'"),
        ("exp:name=w", "bad item 'name=w'"),
        ("exp:model=markov", "bad item 'model=markov'"),
        ("exp:shift=-1", "--straggle: shift must be >= 0"),
        ("bernoulli:p=2", "--straggle: p_straggle must be in [0, 1]"),
    ],
)
def test_straggle_refuses_what_it_cannot_use(text: str, message: str) -> None:
    from edgecode.emulation import parse_straggle

    with pytest.raises(ValueError) as error:
        parse_straggle(text)
    assert message in str(error.value)
    assert "worker 'worker'" not in str(error.value)


def test_readme_straggle_models_parse() -> None:
    """Every --straggle example the README's "Using edgecode" section gives is accepted."""
    from edgecode.emulation import parse_straggle

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Using edgecode") : readme.index("## How it works")]
    models = re.findall(r"`((?:slow|bernoulli|markov|exp|none)(?::[^`]*)?)`", section)
    assert "exp:shift=0.1,rate=20" in models
    for model in models:
        parse_straggle(model)


# --- cluster specs: file and key in every error --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[edge]]\nlink_seconds = "fast"\n', "edge 0: link_seconds must be a number, got 'fast'"),
        (
            '[[edge]]\nname = "e"\n[[edge.worker]]\nname = "w"\nshift = "x"\nrate = 1\n',
            "edge 'e' worker 'w': shift must be a number, got 'x'",
        ),
        (
            '[[edge]]\nname = "e"\n[[edge.worker]]\nshift = 0.1\nrate = 1\nslow = 1\n',
            "edge 'e' worker 0: slow must be true or false, got 1",
        ),
        (
            '[[edge]]\nname = "e"\n[[edge.worker]]\nshift = 0.1\nrate = 1\nshfit = 1\n',
            "edge 'e' worker 0: unknown keys ['shfit']",
        ),
        ('[job]\npartitions = 2.5\n[[edge]]\nname = "e"\n', "[job]: partitions must be an integer"),
        ("[[edge]]\nname = 3\n", "edge 3: name must be a string, got 3"),
        ("edge = 1\n", "edge must be an array of tables, got 1"),
        ("[jobs]\n", "unknown keys ['jobs']"),
        (
            '[[edge]]\nname = "e"\n[[edge.worker]]\nshift = -1.0\nrate = 1\n',
            "shift must be >= 0",  # a value check of the loader, prefixed with the file
        ),
        ('[[edge]]\nname = "e"\n', "needs at least one worker"),
        ("[[edge]\n", "not valid TOML"),
    ],
)
def test_spec_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_cluster_spec(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_spec_loader_agrees_with_the_planner_on_good_specs() -> None:
    from edgecode.planning.spec import load_spec

    for path in sorted(EXAMPLES.glob("*.toml")):
        assert load_cluster_spec(path) == load_spec(path), path


# --- role configs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    port: int = 0
    grace_seconds: float = 2.0
    straggle: str = "none"
    coordinator: str = ""
    verbose: bool = False


def _namespace(config: str | None = None, **flags: str) -> argparse.Namespace:
    return argparse.Namespace(config=config, **flags)


def test_config_sources_in_order_and_named(tmp_path: Path) -> None:
    path = tmp_path / "edgecode.toml"
    # a TOML string is read like a flag's text (port = "7" is 7), other types must match
    path.write_text('[worker]\nport = 7\ngrace_seconds = 1\nverbose = true\nstraggle = "none"\n')
    config, sources = resolve(
        _Config, _namespace(str(path), port="9"), "worker", {"EDGECODE_GRACE_SECONDS": "3"}
    )
    assert config == _Config(port=9, grace_seconds=3.0, verbose=True)
    assert sources == {
        "port": "--port",
        "grace_seconds": "EDGECODE_GRACE_SECONDS",
        "straggle": f"{path}: [worker] straggle",
        "verbose": f"{path}: [worker] verbose",
    }
    quoted = tmp_path / "quoted.toml"
    quoted.write_text('port = "7"\n')
    assert resolve(_Config, _namespace(str(quoted)), "worker", {})[0].port == 7


@pytest.mark.parametrize(
    ("toml", "env", "flags", "message"),
    [
        ("port = 1.5\n", {}, {}, "{path}: [worker] port: expected an integer, got 1.5"),
        ("port = true\n", {}, {}, "{path}: [worker] port: expected an integer, got True"),
        ('port = "x"\n', {}, {}, "{path}: [worker] port: expected an integer, got 'x'"),
        ("verbose = 1\n", {}, {}, "{path}: [worker] verbose: expected true or false, got 1"),
        ("straggle = 5\n", {}, {}, "{path}: [worker] straggle: expected a string, got 5"),
        ("nosuch = 1\n", {}, {}, "{path}: [worker] unknown keys ['nosuch']"),
        ("", {"EDGECODE_PORT": "x"}, {}, "EDGECODE_PORT: expected an integer, got 'x'"),
        ("", {"EDGECODE_PORT": "70000"}, {}, "EDGECODE_PORT: must be <= 65535"),
        ("", {}, {"grace_seconds": "-1"}, "--grace-seconds: must be >= 0"),
        ("", {}, {"grace_seconds": "nan"}, "--grace-seconds: expected a number, got 'nan'"),
        ("", {}, {"straggle": "slow:factor=x"}, "--straggle: slow_factor must be a number"),
        ("", {}, {"coordinator": "nohost"}, "--coordinator: expected HOST:PORT"),
    ],
)
def test_config_errors_name_their_source(
    tmp_path: Path, toml: str, env: dict[str, str], flags: dict[str, str], message: str
) -> None:
    path = tmp_path / "edgecode.toml"
    path.write_text("[worker]\n" + toml)
    with pytest.raises(UsageError) as error:
        resolve(_Config, _namespace(str(path), **flags), "worker", env)
    assert str(error.value).startswith(message.format(path=path))


# --- gRPC errors ---------------------------------------------------------------------------------


class _Code:
    def __init__(self, name: str) -> None:
        self.name = name


def _rpc_error(code: str, details: str) -> Exception:
    import grpc

    class Failed(grpc.RpcError):
        def code(self) -> _Code:
            return _Code(code)

        def details(self) -> str:
            return details

    return Failed()


@pytest.mark.parametrize(
    ("code", "details", "line", "exit_code"),
    [
        (
            "UNAVAILABLE",
            "failed to connect\nto all addresses",
            "cannot reach the master at h:1: failed to connect; to all addresses",
            2,
        ),
        ("DEADLINE_EXCEEDED", "", "the master at h:1 did not answer in time: deadline exceeded", 2),
        (
            "INVALID_ARGUMENT",
            "rounds must be >= 1",
            "the master at h:1: INVALID_ARGUMENT: rounds must be >= 1",
            2,
        ),
        ("INTERNAL", "boom", "the master at h:1: INTERNAL: boom", 1),
    ],
)
def test_remote_errors_are_one_line_naming_the_address(
    code: str, details: str, line: str, exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RemoteError) as error, remote("h:1", "the master"):
        raise _rpc_error(code, details)
    assert report(error.value) == exit_code
    assert capsys.readouterr().err == f"edgecode: error: {line}\n"


def test_unwrapped_rpc_error_and_bugs(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(_rpc_error("UNAVAILABLE", "down")) == 2
    assert capsys.readouterr().err == "edgecode: error: a gRPC call failed: UNAVAILABLE: down\n"
    assert report(KeyError("bug")) is None  # a bug keeps its traceback
    assert report(TypeError("bug")) is None
    with pytest.raises(ZeroDivisionError), remote("h:1", "x"):
        raise ZeroDivisionError  # only gRPC errors are translated


def test_one_line() -> None:
    assert one_line("a\n\n  b  \nc") == "a; b; c"


# --- names the CLI keeps in step with the core without importing it ------------------------------


def test_cli_copies_of_core_names_agree() -> None:
    from edgecode.cli._jobs import GRADIENT_SCHEMES
    from edgecode.cli._jobs import JOB_SCHEMES as CLI_JOB_SCHEMES
    from edgecode.cli.matmul import SCHEMES as CLI_MATRIX_SCHEMES
    from edgecode.cli.train import JOB_ID as CLI_JOB_ID
    from edgecode.planning.plans import SCHEMES
    from edgecode.records import JOB_ID, JOB_SCHEMES, MATRIX_SCHEMES

    assert GRADIENT_SCHEMES == SCHEMES
    assert CLI_JOB_SCHEMES == JOB_SCHEMES
    assert CLI_MATRIX_SCHEMES == MATRIX_SCHEMES
    assert CLI_JOB_ID.pattern == JOB_ID.pattern


# --- job specs -----------------------------------------------------------------------------------


def test_check_job_refuses_what_the_master_would() -> None:
    from edgecode.cli._jobs import check_job
    from edgecode.records import JobConfig

    check_job(JobConfig())
    for bad, message in [
        (JobConfig(rounds=0), "job spec: rounds must be in"),
        (JobConfig(scheme="magic"), "job spec: scheme must be one of"),
        (JobConfig(dataset="/no/such/data.csv"), "job spec: dataset: data file not found"),
        (JobConfig(model="torch:no_such_module_here:f"), "job spec: model: "),
        (JobConfig(optimizer="nosuch"), "job spec: optimizer: "),
        (JobConfig(round_deadline_seconds=0.0), "job spec: round_deadline_seconds"),
    ]:
        with pytest.raises(UsageError) as error:
            check_job(bad)
        assert str(error.value).startswith(message), error.value


def test_check_job_for_a_remote_master_leaves_its_files_to_it() -> None:
    from edgecode.cli._jobs import check_job
    from edgecode.records import JobConfig

    # on the master's machine: not here, and not refused here
    check_job(JobConfig(dataset="/data/on/master.csv"), remote=True)
    check_job(JobConfig(model="torch:their_models:build"), remote=True)
    for bad, message in [
        (JobConfig(dataset="synthetic-lsq:n=1"), "job spec: dataset:"),
        (JobConfig(model="torch:nofunction"), "job spec: model: .* must look like"),
        (JobConfig(model="nosuch"), "job spec: model:"),
        (JobConfig(rounds=0, dataset="/data/on/master.csv"), "job spec: rounds"),
    ]:
        with pytest.raises(UsageError, match=message):
            check_job(bad, remote=True)
