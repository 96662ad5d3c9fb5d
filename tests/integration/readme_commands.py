"""The commands the README shows, as concrete runs (used by test_readme_examples.py).

- Commands come from the fenced code blocks (a line whose first word is a known program; an
  indented ``[...`` line continues a synopsis) and from inline code spans that start with
  ``edgecode`` or ``python -m``. The ``make`` targets the README names are read from the
  Makefile (``make run`` is an ``edgecode run``).
- A synopsis is expanded so that EVERY alternative (``a|b``, ``[x | y]``, ``cmd1 | cmd2``) and
  every optional flag appears in at least one concrete command; placeholders (``HOST:PORT``,
  ``SPEC.toml``, ``FILE``, ``MODEL``, ...) get concrete values; sizes are made small (fewer
  rounds, smaller matrices and clusters: :data:`SMALL`). Every concrete command is first parsed
  by the real ``edgecode`` parser (an unknown flag or choice fails at once).
- Commands that name a master (``--master HOST:PORT``, ``edgecode health``) run against one
  shared :class:`LocalCluster` whose workers straggle with the README's ``--straggle`` model
  strings. The data sets the README lists (bundled, synthetic specs, LIBSVM / CSV / NPZ files)
  each train through ``edgecode train`` on it, the schemes taking turns.
- docker, Kubernetes, root and the test suite itself (``make test``) are not run here: each such
  command is skipped with the reason and the place that tests it (tests/e2e).
- A command this module does not know how to run FAILS (add a rule), so no example goes
  untested silently.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
RUN_TIMEOUT = 600

# ---- reading the README -------------------------------------------------------------------------

#: First words of command lines in code blocks (after ``VAR=value`` assignments).
PROGRAMS = {
    "edgecode",
    ".venv/bin/edgecode",
    "make",
    "python",
    "python3",
    ".venv/bin/python",
    ".venv/bin/pip",
    ".venv/bin/pytest",
    "docker",
    "docker-compose",
    "kubectl",
    "kustomize",
    "debootstrap",
    "tar",
    "rm",
    "cd",
    "iptables",
    "curl",
    "sudo",
    "export",
}
#: Not run here, with the reason (and where it is tested).
ELSEWHERE = {
    "docker": "needs a docker engine: tests/e2e/test_compose.py",
    "docker-compose": "needs a docker engine: tests/e2e/test_compose.py",
    "kubectl": "needs a Kubernetes cluster: tests/e2e/test_k8s_manifests.py builds the manifests",
    "kustomize": "edits a kustomization: tests/e2e/test_k8s_manifests.py",
    "debootstrap": "needs root and network: tests/e2e/test_compose.py",
    "tar": "part of the debootstrap image build: tests/e2e/test_compose.py",
    "iptables": "changes the host firewall (root)",
    "curl": "a Kubernetes port-forward or the k3s installer (network)",
    "sudo": "needs root: the e2e suite (tests/e2e)",
    "export": "points the docker SDK at a remote engine (DOCKER_HOST)",
    "rm": "part of the multi-arch image build (docker buildx)",
    "cd": "part of the kustomize image edit",
    ".venv/bin/pip": "installs packages (network); .ci/run installs the same way",
    ".venv/bin/pytest": "runs a test file itself: it is part of this suite",
    "python3 -m venv": "creates a virtualenv (the Makefile's install step)",
    "edgecode certs": "tests/unit/test_certs.py runs certs init, issue and show through the CLI "
    "and checks what they write",
    "edgecode peer": "a gossip peer needs a coordinator and its neighbours: "
    "tests/integration/test_gossip.py starts 8 of them",
    "edgecode gossip": "needs a coordinator with registered peers: "
    "tests/integration/test_gossip.py::test_the_gossip_command",
    "edgecode cluster": "drives a docker compose stack: tests/unit/test_cluster_docker.py and "
    "tests/e2e/test_compose.py",
    "make test": "runs this suite",
    "make lint": "runs the linters (CI runs it)",
    "make install": "installs the virtualenv (CI runs it)",
    "make image-arm64": "needs root, docker and QEMU: tests/e2e/test_arm64.py builds the image "
    "through the same script and checks it",
}


REFERENCE = "names a command shown in full elsewhere in the README; its --help runs"


@dataclass(frozen=True)
class Example:
    """One command as the README writes it."""

    text: str
    line: int
    inline: bool = False


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()


def _first_word(command: str) -> str:
    words = [w for w in command.split() if not re.match(r"^[A-Z_]+=\S*$", w)]
    return words[0] if words else ""


def block_examples(text: str) -> list[Example]:
    """Command lines of fenced code blocks (continuations joined)."""
    examples: list[Example] = []
    lines = text.splitlines()
    inside = False
    block: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip().startswith("```"):
            if inside:
                examples += _commands_of_block(block)
                block = []
            inside = not inside
            continue
        if inside:
            block.append((number, line))
    return examples


def _commands_of_block(block: list[tuple[int, str]]) -> list[Example]:
    commands: list[Example] = []
    pending = ""
    for number, raw in block:
        line = _strip_comment(raw)
        if not line.strip():
            continue
        stripped = line.strip()
        if commands and (raw.startswith((" ", "\t")) and stripped.startswith("[")):
            last = commands.pop()  # an indented "[--flag ...]" continues a synopsis
            commands.append(Example(f"{last.text} {stripped}", last.line))
            continue
        if pending:
            stripped = f"{pending} {stripped}"
            pending = ""
        if stripped.endswith("\\"):
            pending = stripped[:-1].strip()
            continue
        if _first_word(stripped) in PROGRAMS:
            commands.append(Example(stripped, number))
    return commands


def inline_examples(text: str) -> list[Example]:
    """Inline code spans that are commands (a span may wrap onto the next line)."""
    examples = []
    prose = re.sub(
        r"^\s*```.*?^\s*```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S
    )
    for match in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)?)`", prose):
        span = " ".join(match.group(1).split())
        if re.match(r"^(edgecode \S|python3? -m |python examples/)", span):
            examples.append(Example(span, prose.count("\n", 0, match.start()) + 1, inline=True))
    return examples


def bullet_spans(text: str, starts: str) -> list[str]:
    """Inline code spans of the README bullet that starts with ``starts``."""
    match = re.search(rf"^- {re.escape(starts)}(.*?)(?=^\S|^- |\Z)", text, re.M | re.S)
    assert match, f"README bullet starting {starts!r} not found"
    return re.findall(r"`([^`]+)`", match.group(0))


def make_targets() -> dict[str, list[str]]:
    """``make`` target -> its recipe lines that run the console script."""
    targets: dict[str, list[str]] = {}
    current = ""
    for line in MAKEFILE.read_text().splitlines():
        head = re.match(r"^([a-z-]+):", line)
        if head:
            current = head.group(1)
            targets[current] = []
        elif line.startswith("\t") and "$(BIN)/edgecode" in line:
            targets[current].append(line.strip().replace("$(BIN)/edgecode", "edgecode"))
    return targets


TEXT = README.read_text()
STRAGGLE_MODELS = [s for s in bullet_spans(TEXT, "`--straggle MODEL`") if re.match(r"^\w+:", s)]
#: The master's schemes the "Schemes:" bullet names (the gossip ones run on peers, not through
#: `edgecode train`: their run examples are in the GOCO chapter).
SCHEME_NAMES = [
    s
    for s in bullet_spans(TEXT, "Schemes:")
    if re.fullmatch(r"[a-z][a-z-]*", s) and s not in ("goco", "gossip", "gossip-wait")
]
DATASET_SPECS = bullet_spans(TEXT, "Data sets:")
DATA_FILE_KINDS = ("libsvm", "csv", "npz")  # "or a LIBSVM / CSV / NPZ file"

# ---- expanding a synopsis into concrete commands ------------------------------------------------


def _split_top(text: str, separator: str = " | ") -> list[str]:
    """Split at ``separator`` outside brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        depth += char == "["
        depth -= char == "]"
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i].strip())
            start = i + len(separator)
            i = start
            continue
        i += 1
    parts.append(text[start:].strip())
    return parts


SLOT = "\x00"
#: Optional groups that switch a command into another mode: the documented alternatives run
#: without them, plus ONE command with them (first choices elsewhere).
ONE_WITH = ("--spec", "--power-iterations")
#: ... of which these take no other option (the spec replaces the cluster's flags).
ALONE = ("--spec",)
#: Optional groups kept in every expansion, plus ONE command without them.
ONE_WITHOUT = ("--master",)


def _slots(text: str) -> tuple[str, list[list[str]]]:
    """``[...]`` groups (each expanded in turn) and ``a|b`` words become slots with options."""
    points: list[list[str]] = []

    def group(match: re.Match[str]) -> str:
        points.append(expand_fragment(match.group(1)))
        return f"{SLOT}{len(points) - 1}{SLOT}"

    flat = re.sub(r"\[([^\[\]]*)\]", group, text)
    words = []
    for word in flat.split():
        if "|" in word and SLOT not in word:
            points.append(word.split("|"))
            word = f"{SLOT}{len(points) - 1}{SLOT}"
        words.append(word)
    return " ".join(words), points


def _fill_slots(template: str, picks: list[str]) -> str:
    filled = re.sub(f"{SLOT}(\\d+){SLOT}", lambda m: picks[int(m.group(1))], template)
    return " ".join(filled.split())


def expand_fragment(text: str) -> list[str]:
    """Every expansion of a fragment, each alternative at least once (not every product)."""
    alternatives = _split_top(text)
    if len(alternatives) > 1:
        return list(dict.fromkeys(o for a in alternatives for o in expand_fragment(a)))
    template, points = _slots(text)
    variants = max((len(options) for options in points), default=1)
    return list(
        dict.fromkeys(
            _fill_slots(template, [options[v % len(options)] for options in points])
            for v in range(variants)
        )
    )


def _mode_groups(command: str) -> tuple[str, list[str]]:
    """Remove the ONE_WITH groups; returns the rest and the extra commands."""
    extra = []
    for flag in ONE_WITH:
        group = re.search(rf"\[{re.escape(flag)}[^\[\]]*\]", command)
        if group:
            command = command.replace(group.group(0), " ")
            # --spec replaces the cluster flags: its command has none of the other options
            rest = re.sub(r"\[[^\[\]]*\]", " ", command) if flag in ALONE else command
            extra.append(f"{rest} {group.group(0)}")
    for flag in ONE_WITHOUT:
        group = re.search(rf"\[{re.escape(flag)}[^\[\]]*\]", command)
        if group:
            extra.append(command.replace(group.group(0), " "))
    return command, extra


def expand(command: str) -> list[str]:
    """Concrete commands in which every alternative and optional flag appears at least once."""
    alternatives = _split_top(command)
    first = alternatives[0]
    commands = [first]
    for other in alternatives[1:]:
        if other.split()[0] in SUBCOMMANDS or other.startswith("edgecode"):
            commands.append(other if other.startswith("edgecode") else f"edgecode {other}")
        else:  # "cluster up | down | status": replace the last word
            commands.append(" ".join([*first.split()[:-1], other]))
    concrete: list[str] = []
    for item in commands:
        main, extra = _mode_groups(item)
        concrete += expand_fragment(main)
        concrete += [expand_fragment(e)[0] for e in extra]
    return list(dict.fromkeys(concrete))


# ---- concrete values and small sizes ------------------------------------------------------------

SUBCOMMANDS = {
    "run",
    "train",
    "plan",
    "simulate",
    "report",
    "codes",
    "bench",
    "matmul",
    "coordinator",
    "master",
    "aggregator",
    "worker",
    "health",
    "cluster",
}
EXAMPLE_SPECS = sorted(str(p) for p in (ROOT / "examples").glob("*.toml"))
SMALLEST_SPEC = str(ROOT / "examples/raspberry-pi-fleet.toml")
#: (subcommand, flag) -> the small value used here (replacing the documented one, or added)
SMALL: dict[tuple[str, ...], list[tuple[str, str]]] = {
    ("run",): [("--rounds", "3"), ("--peers", "4")],
    ("run", "cluster"): [
        ("--edges", "2"),
        ("--workers-per-edge", "2"),
        ("--compute-seconds", "0.01"),
    ],
    ("train",): [("--rounds", "3")],
    ("simulate",): [("--rounds", "50")],
    ("report",): [
        ("--rounds", "10"),
        ("--probabilities", "0.1"),
        ("--slowdowns", "2"),
        ("--edges", "2"),
        ("--workers-per-edge", "2"),
    ],
    ("codes", "verify"): [("--max-n", "8")],
    ("bench", "codes"): [("--length", "20000"), ("--matrix-size", "400"), ("--repeats", "1")],
    ("bench", "matmul"): [
        ("--size", "300"),
        ("--workers", "6"),
        ("--k", "4"),
        ("--repeats", "1"),
        ("--compute-seconds", "0.01"),
        ("--k-a", "2"),
        ("--k-b", "2"),
        ("--rhs-cols", "20"),
        ("--matrices", "random"),  # TF-IDF has a fixed size: `edgecode matmul --matrix tfidf` runs
    ],
    ("bench", "train"): [("--rounds", "6"), ("--repeats", "1")],
    # one data order (the label-sorted one, the newer path) keeps it to half the jobs
    ("bench", "partial"): [("--rounds", "30"), ("--data", "sorted")],
    ("bench", "shuffle"): [("--rounds", "30"), ("--repeats", "1")],
    ("bench", "goco"): [("--rounds", "20"), ("--repeats", "1"), ("--real-rounds", "3")],
    ("bench", "scale"): [("--sizes", "8"), ("--rounds", "4")],
    ("bench", "soak"): [("--minutes", "0.3")],  # a few jobs with faults, the report and figure
    ("matmul",): [("--size", "300")],
}
#: Data sets of ``edgecode run`` examples that run through ``edgecode train`` instead.
DELEGATED: set[str] = set()
#: Heavy runs: marked slow (still part of ``make test``).
SLOW = (
    "bench train",
    "bench matmul",
    "bench codes",  # its sparse-vs-dense part scans every 16-of-20 subset at any size
    "bench partial",
    "bench shuffle",
    "bench goco",
    "bench scale",
    "codes verify",  # the hierarchical cases have fixed sizes
    "edgecode.bench.transport",  # no size options: 1M floats, 15 repeats
    "run --spec",
    "thousand-workers",
    "tfidf",
)


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    if flag in argv:
        at = argv.index(flag)
        return [*argv[: at + 1], value, *argv[at + 2 :]]
    return [*argv, flag, value]


def shrink(argv: list[str]) -> list[str]:
    keys = [tuple(argv[1:2]), tuple(argv[1:3])]
    if argv[1:2] == ["run"] and "--spec" not in argv:
        keys.append(("run", "cluster"))
    for key in keys:
        for flag, value in SMALL.get(key, []):
            argv = _set_flag(argv, flag, value)
    return argv


#: Placeholder -> value (``{master}``, ``{files}`` and ``{spec}`` are filled per run).
PLACEHOLDERS = {
    "HOST:PORT": "{master}",
    "localhost:50051": "{master}",
    "master:50051": "{master}",
    "raspberrypi.local:50051": "{master}",
    "SPEC.toml": "{spec}",
    "FILE": "{out}/result.json",
    "FILE.png": "{out}/plot.png",
    "FILE.toml": "{out}/service.toml",
    "DIR": "{out}/dir",
    "SECONDS": "0.02",
    "S": "1",
    "K": "4",
    "N": "6",
    "T": "2",
    "MODEL": STRAGGLE_MODELS[0] if STRAGGLE_MODELS else "MODEL",
    "A.npz": "{files}/A.npz",
    "A.mtx": "{files}/A.mtx",
    "x.npy": "{files}/x.npy",
    "B.npz": "{files}/B.npz",
    "B.npy": "{files}/B.npy",
    "y.npy": "{out}/y.npy",
    "0.08": "0.01",
    "0.24": "0.01",
    "...": "",
}
#: Dataset spec placeholders: ``n=...`` and friends get small values.
SPEC_FILLS = {"n=...": "n=200", "d=...": "d=8", "density=...": "density=0.1"}


def substitute(words: list[str]) -> list[str]:
    out = []
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        if word == "KIND" and previous == "show":
            out.append("{kind}")
            continue
        if previous == "--tls-dir":  # a client's certificate: the launcher's, against a cluster
            out.append("{tls}")
            continue
        if previous == "--dataset" and word == "FILE":
            out.append("{data:csv}")
            continue
        if previous == "--dataset" and word == "synthetic-...":
            word = next(s for s in DATASET_SPECS if s.startswith("synthetic-") and "..." in s)
        if word.endswith(".toml") and word.startswith("examples/"):
            word = str(ROOT / word)
        if word.startswith("torch:examples/"):  # a model file, wherever the command runs
            word = "torch:" + str(ROOT / word.removeprefix("torch:"))
        if word.startswith("synthetic-"):
            for hole, value in SPEC_FILLS.items():
                word = word.replace(hole, value)
        value = PLACEHOLDERS.get(word, word)
        if value:
            out.append(value)
    return out


# ---- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One concrete run: ``argv`` after ``python -m``; ``where`` = "cluster" (needs the shared
    cluster), "alone" or "parse" (in-process, no run)."""

    id: str
    argv: tuple[str, ...]
    where: str = "alone"
    env: tuple[tuple[str, str], ...] = ()
    skip: str = ""
    slow: bool = False


def _edgecode_cases(text: str) -> list[Case]:
    cases = []
    for concrete in expand(text):
        words = concrete.split()
        words = words[1:] if words[0] in ("edgecode", ".venv/bin/edgecode") else words
        sub = words[0] if words else ""
        if sub == "cluster":
            cases.append(Case(concrete, (), skip=ELSEWHERE["edgecode cluster"]))
            continue
        if sub == "certs":
            cases.append(Case(concrete, (), skip=ELSEWHERE["edgecode certs"]))
            continue
        if sub in ("peer", "gossip"):
            cases.append(Case(concrete, (), skip=ELSEWHERE[f"edgecode {sub}"]))
            continue
        if sub not in SUBCOMMANDS:
            cases.append(Case(concrete, (), skip=f"UNKNOWN subcommand {sub!r}"))
            continue
        argv = ["edgecode", *substitute(words)]
        if sub in ("coordinator", "master", "aggregator", "worker"):
            argv = _service_argv(argv)
        argv = shrink(argv)
        schemes = argv[argv.index("--schemes") + 1].split(",") if "--schemes" in argv else []
        gossip_only = bool(schemes) and set(schemes) <= {"goco", "gossip", "gossip-wait"}
        if sub == "run" and "--dataset" in argv and not gossip_only:
            # A data set is the master's business, the same for run and train: the first one
            # runs here, each other one through `edgecode train` on the shared cluster.
            at = argv.index("--dataset") + 1
            if argv[at] != DATASET_SPECS[0]:
                DELEGATED.add(argv[at])
                argv[at] = DATASET_SPECS[0]
        where = "cluster" if any("{master}" in a for a in argv) or sub == "health" else "alone"
        if sub == "health" and not any("{master}" in a for a in argv):
            argv.append("{master}")
        kinds = [""]
        if "{kind}" in argv:
            kinds = ["cyclic", "fractional", "hierarchical"]
        specs = [""]
        if "{spec}" in argv:
            # plan runs on every example (the README's table); run and simulate emulate or
            # simulate the cluster round by round: the smallest spec
            specs = EXAMPLE_SPECS if sub == "plan" else [SMALLEST_SPEC]
        for kind, spec in itertools.product(kinds, specs):
            filled = tuple(a.replace("{kind}", kind).replace("{spec}", spec) for a in argv)
            label = " ".join(filled).replace(str(ROOT) + "/", "")
            cases.append(Case(label, filled, where, slow=any(marker in label for marker in SLOW)))
    return cases


def _service_argv(argv: list[str]) -> list[str]:
    """A service started as the README shows it, plus what the test needs to stop it."""
    if "--tls-dir" in argv:  # the harness gives the service a certificate of its role and name
        at = argv.index("--tls-dir")
        argv = [*argv[:at], *argv[at + 2 :]]
    if "--config" in argv:
        argv = _set_flag(argv, "--config", "{out}/service.toml")
    argv = _set_flag(argv, "--port", "0")
    argv = _set_flag(argv, "--metrics-port", "0")
    return [*argv, "--ready-file", "{out}/ready.json"]


def _python_case(example: Example) -> Case:
    words = example.text.split()
    if words[:3] == ["python3", "-m", "edgecode.cli.health"]:
        # the container HEALTHCHECK: against 127.0.0.1:$EDGECODE_PORT
        return Case(example.text, tuple(words[2:]), "cluster", env=(("EDGECODE_PORT", "{port}"),))
    if words[:3] == ["python", "-m", "edgecode.bench.transport"]:
        return Case(example.text, tuple(words[2:]), slow=True)
    if words[:4] == ["python", "-m", "edgecode.bench.planner", "--compare"]:
        # this tree against itself (OLD is any other version's services/), small clusters only
        small = ("--compare", str(ROOT / "services"), "--max-workers", "8", "--repeats", "1")
        return Case(example.text, (words[2], *small))
    if words[:4] == ["python", "-m", "edgecode.bench.grpc_floor", "measure"]:
        # the bare trees of the bench's cluster, a few rounds each
        return Case(example.text, (*words[2:], "--rounds", "8"), slow=True)
    if words[:3] == ["python", "-m", "edgecode.bench.partial_error"]:
        return Case(example.text, tuple(words[2:]), slow=True)
    if words[:3] == ["python", "-m", "edgecode.bench.shared_cores"]:
        # no CPU hogs beside the suite, a few rounds per plan
        return Case(example.text, (words[2], "--hogs", "0", "--rounds", "3"), slow=True)
    if words[:3] == ["python", "-m", "edgecode.bench.shuffle_sim"]:
        small = ("--workers", "20", "--rounds", "20", "--seeds", "1", "--out", "{out}/sim")
        return Case(example.text, (words[2], *small), slow=True)
    if words[:2] == ["python", "examples/make_thousand_workers.py"]:
        # rewriting the committed file is what it does; --check proves it would write the same
        return Case(example.text, (str(ROOT / words[1]), "--check"))
    if words[:2] == ["python", "examples/torch/train_digits.py"]:
        model = "torch:" + str(ROOT / words[2].removeprefix("torch:"))
        return Case(example.text, (str(ROOT / words[1]), model, "--steps", "5"))
    if words[:3] == ["python3", "-m", "venv"]:
        return Case(example.text, (), skip=ELSEWHERE["python3 -m venv"])
    return Case(example.text, (), skip=f"UNKNOWN python command {example.text!r}")


def _make_case(example: Example) -> list[Case]:
    target = example.text.split()[1]
    if f"make {target}" in ELSEWHERE:
        return [Case(example.text, (), skip=ELSEWHERE[f"make {target}"])]
    recipes = make_targets().get(target)
    if not recipes:
        return [Case(example.text, (), skip=f"UNKNOWN make target {target!r}")]
    return [c for recipe in recipes for c in _edgecode_cases(recipe)]


def _is_reference(example: Example) -> bool:
    """An inline ``edgecode SUB`` without arguments names a command the README shows in full
    elsewhere (its --help runs in test_every_command_parses_and_every_subcommand_has_help)."""
    words = example.text.split()
    if not example.inline or any(w.startswith("-") or w.isupper() for w in words):
        return False
    fuller = [
        e
        for e in EXAMPLES
        if e is not example and e.text.startswith(example.text) and len(e.text) > len(example.text)
    ]
    return bool(fuller)


def cases_of(example: Example) -> list[Case]:
    first = _first_word(example.text)
    words = example.text.split()
    if first in ("edgecode", ".venv/bin/edgecode"):
        if _is_reference(example):
            return [Case(example.text, (), skip=REFERENCE)]
        return _edgecode_cases(example.text)
    if first == "make":
        return _make_case(example)
    if first in ("python", "python3"):
        return [_python_case(example)]
    if first in ELSEWHERE:
        return [Case(example.text, (), skip=ELSEWHERE[first])]
    return [Case(example.text, (), skip=f"UNKNOWN command {words[0]!r}")]


EXAMPLES = block_examples(TEXT) + inline_examples(TEXT)


def all_cases() -> list[Case]:
    unique: dict[tuple[str, ...], Case] = {}
    for example in EXAMPLES:
        for case in cases_of(example):
            unique.setdefault(_key(case.argv) if case.argv else (case.id,), case)
    # The data sets and schemes of the "Using edgecode" bullets, each through `edgecode train`.
    datasets = [*substitute(DATASET_SPECS), *(f"{{data:{k}}}" for k in DATA_FILE_KINDS)]
    for dataset, scheme in zip(datasets, itertools.cycle(SCHEME_NAMES), strict=False):
        case = _train_case(dataset, scheme)
        unique.setdefault(_key(case.argv), case)
    return list(unique.values())


def _train_case(dataset: str, scheme: str) -> Case:
    argv = ("edgecode", "train", "--master", "{master}", "--scheme", scheme)
    argv += ("--dataset", dataset, "--rounds", "3")
    return Case(" ".join(argv), argv, "cluster")


#: Flags that only name where results go.
OUTPUTS = ("--out", "--json", "--plot")


def _key(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Commands that differ only in the order of their flags, or in where they write their
    results, are one run."""
    head = [w for w in argv[:3] if not w.startswith("-")]
    rest = list(argv[len(head) :])
    for flag in OUTPUTS:
        if flag in rest and argv[1:2] != ("matmul",):
            at = rest.index(flag)
            del rest[at : at + 2]
    return (*head, *sorted(rest))


CASES = all_cases()


def params_of(where: set[str]) -> list[Any]:
    params = []
    for case in CASES:
        if case.where not in where or case.skip:
            continue
        marks = [pytest.mark.slow] if case.slow else []
        params.append(pytest.param(case, id=case.id[:120], marks=marks))
    return params
