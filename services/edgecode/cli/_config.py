"""Build a role's frozen config: command-line flags, then ``EDGECODE_*`` environment variables,
then a TOML file (``--config``), then the defaults. A bad value raises an error naming where it
came from: the flag, the variable, or the file and its key.

Only the CLI reads the environment."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from edgecode.cli import _args
from edgecode.cli._errors import UsageError

T = TypeVar("T")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, help_text: dict[str, str]) -> None:
    """One ``--key`` flag per config field (default None, so unset flags fall through)."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with the keys below (flags and env win)"
    )
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        parser.add_argument(
            flag,
            dest=field.name,
            default=None,
            metavar=field.name.upper(),
            help=f"{help_text.get(field.name, '')} (env EDGECODE_{field.name.upper()}; default {default!r})".strip(),
        )


def _read_file(path: Path, section: str) -> tuple[dict[str, Any], str]:
    """The keys of ``section`` in a TOML file (its ``[section]`` table, else the whole file),
    and how an error names a key of it."""
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.is_dir():
        raise UsageError(f"config file {path} is a folder")
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a text file: {exc}") from None
    if section in data:
        if not isinstance(data[section], dict):
            raise UsageError(f"{path}: {section} must be a [{section}] table")
        return data[section], f"{path}: [{section}] "
    return data, f"{path}: "


def resolve(
    cls: type[T], args: argparse.Namespace, section: str, environ: dict[str, str] | None = None
) -> tuple[T, dict[str, str]]:
    """The config and, for every field not left at its default, where its value came from."""
    environ = dict(os.environ) if environ is None else environ
    from_file: dict[str, Any] = {}
    prefix = ""
    if getattr(args, "config", None):
        from_file, prefix = _read_file(Path(args.config), section)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(from_file) - set(names)
    if unknown:
        raise UsageError(
            f"{prefix}unknown keys {sorted(unknown)} for {section} (expected some of {sorted(names)})"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, field in names.items():
        raw: Any = getattr(args, name, None)
        source = f"--{name.replace('_', '-')}"
        if raw is None and f"EDGECODE_{name.upper()}" in environ:
            raw, source = environ[f"EDGECODE_{name.upper()}"], f"EDGECODE_{name.upper()}"
        if raw is None and name in from_file:
            raw, source = from_file[name], f"{prefix}{name}"
        if raw is None:
            continue
        value = _convert(raw, type(field.default), source)
        check_value(name, value, source)
        values[name], sources[name] = value, source
    return cls(**values), sources


def build_config(
    cls: type[T], args: argparse.Namespace, section: str, environ: dict[str, str] | None = None
) -> T:
    """The role's config (see :func:`resolve`)."""
    return resolve(cls, args, section, environ)[0]


def _convert(raw: Any, kind: type, source: str) -> Any:
    """A flag or environment value is text; a TOML value must already have the field's type."""
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    typed = not isinstance(raw, str)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if not typed and raw.lower() in ("1", "true", "yes", "on"):
                return True
            if not typed and raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(raw, bool) or (typed and not isinstance(raw, int)):
                raise ValueError
            return int(raw)
        if kind is float:
            if isinstance(raw, bool) or (typed and not isinstance(raw, int | float)):
                raise ValueError
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if typed:
            raise ValueError
        return str(raw)
    except (TypeError, ValueError):
        raise UsageError(
            f"{source}: expected {words.get(kind, kind.__name__)}, got {raw!r}"
        ) from None


#: Checks by field name, for every role (the values must be usable anywhere: no file checks).
CHECKS = {
    "port": _args.integer(0, 65535),
    "metrics_port": _args.integer(0, 65535),
    "seed": _args.seed,
    "heartbeat_seconds": _args.number(above=0.0),
    "dead_after_seconds": _args.number(above=0.0),
    "straggle": _args.straggle,
}


def check_value(name: str, value: Any, source: str) -> None:
    """Refuse a value no role can use, naming ``source``."""
    check = CHECKS.get(name)
    if check is None and name.endswith("_seconds"):
        check = _args.seconds
    if check is None and name == "coordinator" and value:
        check = _args.address
    if check is None:
        return
    try:
        check(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{source}: {exc}") from None
