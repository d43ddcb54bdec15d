"""Dispatches a call through Dialtone's gRPC API with stubs generated from proto/ by
grpcio-tools, watches it until it ends, and prints its final status: proof that the protos
serve a non-Rust client.

usage: dispatch_call.py PROTO_DIR GRPC_ADDR API_KEY AGENT_ID TO
"""

import pathlib
import sys
import tempfile

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4] / "examples" / "brain"))
import dialtone_stubs  # noqa: E402


def main() -> None:
    proto_dir, addr, key, agent_id, to = sys.argv[1:6]
    with tempfile.TemporaryDirectory() as out:
        dialtone_stubs.generate(pathlib.Path(proto_dir), pathlib.Path(out))
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
