"""Dispatches a call through Dialtone's gRPC API with stubs generated from proto/ by
grpcio-tools, watches it until it ends, and prints its final status: proof that the protos
serve a non-Rust client.

usage: dispatch_call.py PROTO_DIR GRPC_ADDR API_KEY AGENT_ID TO
"""

import pathlib
import sys
import tempfile

from grpc_tools import protoc
import grpc


def generate(proto_dir: pathlib.Path, out: pathlib.Path) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(proto_dir)) for p in sorted(proto_dir.glob("dialtone/v1/*.proto"))]
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if code != 0:
        sys.exit(f"protoc failed ({code})")


def main() -> None:
    proto_dir, addr, key, agent_id, to = sys.argv[1:6]
    with tempfile.TemporaryDirectory() as out:
        generate(pathlib.Path(proto_dir), pathlib.Path(out))
        sys.path.insert(0, out)
        from dialtone.v1 import calls_pb2, calls_pb2_grpc  # noqa: E402

        auth = [("authorization", f"Bearer {key}")]
        with grpc.insecure_channel(addr) as channel:
            calls = calls_pb2_grpc.CallServiceStub(channel)
            request = calls_pb2.DispatchCallRequest(agent_id=agent_id, to=to)
            request.metadata.update({"source": "python"})
            call = calls.DispatchCall(request, metadata=auth, timeout=10).call
            print("dispatched", call.id, calls_pb2.CallStatus.Name(call.status), flush=True)
            last = call
            for update in calls.WatchCall(calls_pb2.WatchCallRequest(id=call.id), metadata=auth, timeout=60):
                last = update.call
                print("status", calls_pb2.CallStatus.Name(last.status), flush=True)
            print("final", calls_pb2.CallStatus.Name(last.status), last.end_reason.code,
                  dict(last.metadata), flush=True)
            try:
                calls.GetCall(calls_pb2.GetCallRequest(id=call.id), timeout=10)
            except grpc.RpcError as e:
                print("unauthenticated" if e.code() == grpc.StatusCode.UNAUTHENTICATED else e.code(), flush=True)


if __name__ == "__main__":
    main()
