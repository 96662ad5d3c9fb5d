"""Regenerate services/edgecode/v1/ from proto/edgecode/v1/*.proto (the only way it changes).

Run: python scripts/gen_protos.py   (CI runs it and fails on any diff)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "services"


def main() -> int:
    target = OUT / "edgecode" / "v1"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    include = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "edgecode" / "v1").glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        return int(code)
    (target / "__init__.py").write_text(
        '"""Generated protobuf/gRPC code. Never edit by hand: run scripts/gen_protos.py."""\n'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
