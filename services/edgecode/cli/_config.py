"""Build a role's frozen config: command-line flags, then ``EDGECODE_*`` environment variables,
then a TOML file (``--config``), then the defaults. A bad value raises an error naming the key.

Only the CLI reads the environment."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, help_text: dict[str, str]) -> None:
    """One ``--key`` flag per config field (default None, so unset flags fall through)."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with the keys below (flags and env win)"
    )
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        # A bool flag alone means true (``--insecure``); ``--insecure false`` also parses.
        switch = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        parser.add_argument(
            flag,
            dest=field.name,
            default=None,
            metavar=field.name.upper(),
            help=f"{help_text.get(field.name, '')} (env EDGECODE_{field.name.upper()}; default {default!r})".strip(),
            **switch,  # type: ignore[arg-type]
        )


def build_config(
    cls: type[T], args: argparse.Namespace, section: str, environ: dict[str, str] | None = None
) -> T:
    environ = dict(os.environ) if environ is None else environ
    from_file: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        with path.open("rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML: {exc}") from exc
        from_file = data.get(section, data)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(from_file) - set(names)
    if unknown:
        raise ValueError(f"config file: unknown keys {sorted(unknown)} for {section}")
    values: dict[str, Any] = {}
    for name, field in names.items():
        raw: Any = getattr(args, name, None)
        source = f"--{name.replace('_', '-')}"
        if raw is None and f"EDGECODE_{name.upper()}" in environ:
            raw, source = environ[f"EDGECODE_{name.upper()}"], f"EDGECODE_{name.upper()}"
        if raw is None and name in from_file:
            raw, source = from_file[name], f"{section}.{name} in the config file"
        if raw is None:
            continue
        values[name] = _convert(raw, type(field.default), source)
    return cls(**values)


def _convert(raw: Any, kind: type, source: str) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if value != value:
                raise ValueError
            return value
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected a {kind.__name__}, got {raw!r}") from None
