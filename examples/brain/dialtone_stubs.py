"""Generates Python stubs for Dialtone's protos (proto/dialtone/v1) with grpcio-tools."""

import pathlib
import sys

from grpc_tools import protoc


def generate(proto_dir: pathlib.Path, out: pathlib.Path) -> None:
    """Writes dialtone/v1/*_pb2.py and *_pb2_grpc.py under `out` and puts `out` on sys.path."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(proto_dir)) for p in sorted(proto_dir.glob("dialtone/v1/*.proto"))]
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    sys.path.insert(0, str(out))
