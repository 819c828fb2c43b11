"""Regenerate (or check) the Python code generated from ``proto/``.

``python -m memos.api.codegen`` rewrites ``memos/v1/*_pb2*.py(i)``;
``--check`` regenerates into a temporary folder and fails when the committed files differ,
so a stale contract cannot slip through CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = Path("memos") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _protos() -> list[Path]:
    return sorted((PROTO_ROOT / OUT_PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc on every .proto into ``out_root``; returns the generated files."""
    from grpc_tools import protoc

    protos = _protos()
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / OUT_PACKAGE}")
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(
        p for p in (out_root / OUT_PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def _committed() -> dict[str, Path]:
    folder = ROOT / OUT_PACKAGE
    return {p.name: p for p in folder.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def stale_files() -> list[str]:
    """Names of generated files that differ from, or are missing beside, a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = _committed()
        names = sorted(set(fresh) | set(committed))
        return [
            n
            for n in names
            if n not in fresh
            or n not in committed
            or not filecmp.cmp(fresh[n], committed[n], shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(
                "generated protobuf code is stale: " + ", ".join(stale) + " (run `make proto`)",
                file=sys.stderr,
            )
            return 1
        print("generated protobuf code is fresh")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for old in _committed().values():
            old.unlink()
        for path in generate(Path(tmp)):
            shutil.copy2(path, ROOT / OUT_PACKAGE / path.name)
            print(f"wrote {OUT_PACKAGE / path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
