#!/usr/bin/env python3
"""weir's errors through Python's standard gRPC stack, as a client author in Python would meet
them: stubs generated from `proto/weir/v1/weir.proto` by grpcio-tools' protoc, calls with
grpcio, and the error details read with grpcio-status's `rpc_status.from_call`, which raises
unless the `grpc-status-details-bin` trailer is a `google.rpc.Status` whose code and message
match the call's.

    python3 broker/tests/grpc_conventions.py HOST:PORT REPO_ROOT

against a running broker started with `--max-request-bytes 2097152 --max-batch-bytes 1048576`
(`server_grpc_conventions.rs` does this). Needs grpcio, grpcio-status and grpcio-tools; batches
are encoded with the spec's independent encoder, `proto/tests/spec_encoder.py`. Prints
`N passed, 0 failed`; exits non-zero on the first failure.
"""

import importlib
import os
import sys
import tempfile

import grpc
from grpc_status import rpc_status
from grpc_tools import protoc

REQUEST_LIMIT = 2097152


def generate_stubs(root: str, out: str):
    """weir_pb2 and weir_pb2_grpc, from the contract itself (protoc must accept it too)."""
    proto_dir = os.path.join(root, "proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, "weir/v1/weir.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc could not compile weir.proto")
    sys.path.insert(0, out)
    return importlib.import_module("weir.v1.weir_pb2"), importlib.import_module(
        "weir.v1.weir_pb2_grpc"
    )


def main():
    addr, root = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(root, "proto", "tests"))
    import spec_encoder

    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = generate_stubs(root, out)
        channel = grpc.insecure_channel(
            addr, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = pb_grpc.WeirStub(channel)
        stub.CreateTopic(pb.CreateTopicRequest(name="py", partitions=1), timeout=30)

        def batch(value: bytes) -> bytes:
            return spec_encoder.encode_batch([(None, value, 1700000000000, [])])

        stub.Produce(pb.ProduceRequest(topic="py", partition=0, batch=batch(b"first")), timeout=30)

        def fetch_past_end():
            # A server stream: the error is raised when it is read.
            for _ in stub.Fetch(pb.FetchRequest(topic="py", partition=0, offset=99), timeout=30):
                pass

        cases = [
            (
                "describe an unknown topic",
                pb.UNKNOWN_TOPIC,
                grpc.StatusCode.NOT_FOUND,
                lambda: stub.DescribeTopic(pb.DescribeTopicRequest(name="nope"), timeout=30),
            ),
            (
                "a bad topic name",
                pb.INVALID_NAME,
                grpc.StatusCode.INVALID_ARGUMENT,
                lambda: stub.CreateTopic(
                    pb.CreateTopicRequest(name="bad/name", partitions=1), timeout=30
                ),
            ),
            ("fetch past the end", pb.OFFSET_OUT_OF_RANGE, grpc.StatusCode.OUT_OF_RANGE, fetch_past_end),
            (
                "a conditional append that does not hold",
                pb.CONFLICT,
                grpc.StatusCode.FAILED_PRECONDITION,
                lambda: stub.Produce(
                    pb.ProduceRequest(topic="py", partition=0, batch=batch(b"x"), expected_offset=5),
                    timeout=30,
                ),
            ),
            (
                "a produce request over max_request_bytes",
                pb.BATCH_TOO_LARGE,
                grpc.StatusCode.INVALID_ARGUMENT,
                lambda: stub.Produce(
                    pb.ProduceRequest(topic="py", partition=0, batch=bytes(3 << 20)), timeout=30
                ),
            ),
        ]
        passed = 0
        for what, reason, code, call in cases:
            try:
                call()
            except grpc.RpcError as e:
                assert e.code() == code, f"{what}: {e.code()} != {code}"
                # Raises ValueError if the details' code or message disagree with the call's.
                status = rpc_status.from_call(e)
                assert status is not None, f"{what}: no grpc-status-details-bin trailer"
                assert status.code == code.value[0], f"{what}: {status.code}"
                assert len(status.details) == 1, f"{what}: {status.details}"
                detail = status.details[0]
                assert detail.type_url == "type.googleapis.com/weir.v1.Error", detail.type_url
                assert detail.Is(pb.Error.DESCRIPTOR), f"{what}: {detail.type_url}"
                error = pb.Error()
                assert detail.Unpack(error), f"{what}: does not unpack"
                assert error.code == reason, f"{what}: {pb.ErrorCode.Name(error.code)}"
                assert error.message == e.details(), f"{what}: {error.message!r}"
                trailers = dict(e.trailing_metadata() or ())
                assert trailers.get("weir-reason") == pb.ErrorCode.Name(reason), trailers
                if reason == pb.CONFLICT:
                    assert error.HasField("actual_offset") and error.actual_offset == 1, error
                if reason == pb.BATCH_TOO_LARGE:
                    assert str(REQUEST_LIMIT) in error.message, error.message
                print(f"ok: {what}: {pb.ErrorCode.Name(error.code)} [{code.name}]")
                passed += 1
            else:
                raise AssertionError(f"{what}: the call succeeded")
        channel.close()
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
