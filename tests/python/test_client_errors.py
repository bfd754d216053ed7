"""python_client_errors: every failure is a DeltaserveError with the gRPC code and the
server's message, against a live deltaserved (port 0) with the example tenants config:
wrong token, another tenant, unknown task, a push of a container made against another
base (refused before its upload: the declared base hash), and for load_into a name, shape or dtype
that does not match (refused before any byte is written: the target stays untouched);
a deadline; server addresses (a host without a port dials 50051; malformed ones are
INVALID_ARGUMENT); an unreachable server; a corrupted stream (DATA_LOSS)."""
from concurrent import futures
import os
import socket
import tempfile
import threading
import time

import grpc
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client, DeltaserveError
from deltaserve import _stream
from deltaserve import errors
from deltaserve import client as client_mod
from deltaserve.v1 import delta_service_pb2 as pb
from deltaserve.v1 import delta_service_pb2_grpc as pb_grpc

SHAPES = {"a.weight": (64, 128), "b.weight": (128, 64), "b.bias": (64,)}
C = grpc.StatusCode

with tempfile.TemporaryDirectory(prefix="py-errors-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base, config=d.EXAMPLE_CONFIG)
    acme = Client(daemon.addr, token=d.ACME_TOKEN, timeout=20)
    acme.push("chat", delta)

    # UNAUTHENTICATED ends with deltactl's hint in Python's terms (new-user trial: the
    # Python client gave none).
    ld.expect_error(lambda: Client(daemon.addr, token="wrong").list_tasks(),
                    C.UNAUTHENTICATED, "ListTasks",
                    f"(hint: the server at {daemon.addr} did not accept the token given by "
                    "Client(token=) or DELTASERVE_TOKEN)")
    ld.expect_error(lambda: Client(daemon.addr, token="").get_base(), C.UNAUTHENTICATED,
                    "GetBase", "(hint: no token was given: pass Client(token=...) or set "
                    "DELTASERVE_TOKEN)")
    # The same hint from a stream on either path (the C++ client's error on the native one).
    ld.expect_error(lambda: Client(daemon.addr, token="").load_state_dict("chat"),
                    C.UNAUTHENTICATED, "StreamWeights 'chat'", "(hint: no token was given")
    # PERMISSION_DENIED (only the admin Checkpoint call, which Client lacks, gets it) and a
    # hinted error passed on again (one hint).
    denied = errors.with_hint(DeltaserveError(C.PERMISSION_DENIED, "Checkpoint: no"), acme)
    d.check(denied.message == "Checkpoint: no (hint: the token (Client(token=) or "
            "DELTASERVE_TOKEN) may not do this; admin calls need an admin token, and "
            "Client(tenant=) or DELTASERVE_TENANT names the tenant to act on)", denied.message)
    d.check(errors.with_hint(denied, acme) is denied, "a second hint was added")
    globex = Client(daemon.addr, token="CHANGE-ME-globex-token")
    ld.expect_error(lambda: globex.task_info("chat"), C.NOT_FOUND, "GetTask 'chat'")
    ld.expect_error(lambda: list(globex.stream_weights("chat")), C.NOT_FOUND,
                    "StreamWeights 'chat'")
    # A tenant token naming another tenant: NOT_FOUND (names do not leak).
    ld.expect_error(lambda: Client(daemon.addr, token=d.ACME_TOKEN, tenant="globex")
                    .task_info("chat"), C.NOT_FOUND, "GetTask 'globex/chat'")
    ld.expect_error(lambda: acme.task_info("nope"), C.NOT_FOUND, "GetTask 'nope'")
    ld.expect_error(lambda: list(acme.stream_weights("nope")), C.NOT_FOUND,
                    "StreamWeights 'nope'")
    ld.expect_error(lambda: acme.task_info("../x"), C.INVALID_ARGUMENT, "GetTask '../x'")
    # The same through load_state_dict (the path under test, DELTASERVE_NATIVE).
    ld.expect_error(lambda: Client(daemon.addr, token="wrong").load_state_dict("chat"),
                    C.UNAUTHENTICATED, "StreamWeights 'chat'")
    ld.expect_error(lambda: globex.load_state_dict("chat"), C.NOT_FOUND, "StreamWeights 'chat'",
                    "not found")
    ld.expect_error(lambda: Client(daemon.addr, token=d.ACME_TOKEN, tenant="globex")
                    .load_state_dict("chat"), C.NOT_FOUND, "StreamWeights 'globex/chat'")
    ld.expect_error(lambda: acme.load_state_dict("nope"), C.NOT_FOUND, "StreamWeights 'nope'")
    ld.expect_error(lambda: acme.load_state_dict("chat", include=["\udc80"]),
                    C.INVALID_ARGUMENT, "include '\\udc80' is not valid UTF-8")
    # Local paths of the wrong kind: a directory as the container, a file as the output
    # directory (a DeltaserveError with INVALID_ARGUMENT, not a bare OSError).
    ld.expect_error(lambda: acme.push("d", tmp), C.INVALID_ARGUMENT, f"cannot read {tmp}",
                    "Is a directory")
    ld.expect_error(lambda: acme.pull_dir("chat", delta), C.INVALID_ARGUMENT,
                    f"pull_dir: cannot create the directory {delta}")
    # New-user trial: a failed pull_dir left the directories it made. A missing task, then
    # a Ctrl-C after the first shard was written: nothing of its own making stays; a
    # directory that was there keeps what it held and gets no scratch shard.
    made = os.path.join(tmp, "made")
    ld.expect_error(lambda: acme.pull_dir("nope", os.path.join(made, "nested")), C.NOT_FOUND,
                    "'nope'")
    d.check(not os.path.exists(made), f"pull_dir of a missing task left {made}")
    there = os.path.join(tmp, "there")
    os.mkdir(there)
    with open(os.path.join(there, "keep.txt"), "w") as f:
        f.write("mine")
    real_stream = acme._tensor_stream

    def interrupted(task, dtype=None):
        for i, tensor in enumerate(real_stream(task, dtype=dtype)):
            if i == 2:
                raise KeyboardInterrupt
            yield tensor

    acme._tensor_stream = interrupted
    for out in (os.path.join(made, "nested"), there):
        try:
            acme.pull_dir("chat", out, shard_bytes=1)  # one shard per tensor
            d.check(False, "the interrupted pull_dir returned")
        except KeyboardInterrupt:
            pass
    del acme._tensor_stream
    d.check(not os.path.exists(made), f"interrupted pull_dir left {made}")
    d.check(sorted(os.listdir(there)) == ["keep.txt"], f"{there}: {sorted(os.listdir(there))}")
    d.log("a failed or interrupted pull_dir removes the directories it made")
    ld.expect_error(lambda: acme.push("d", os.path.join(tmp, "missing.dds")), C.NOT_FOUND,
                    "No such file or directory")
    ld.expect_error(lambda: list(acme.stream_weights("chat", dtype="i64")), C.INVALID_ARGUMENT,
                    "unsupported out dtype 'i64'")
    # A container made against another base: push declares the header's base hash
    # (PutDeltaMetadata.base_hash) and the server refuses it before the upload. Its last
    # byte is flipped, so an upload that got as far as parsing would be DATA_LOSS.
    other_dir = os.path.join(tmp, "other")
    os.mkdir(other_dir)
    other_base, other_ft, _ = ld.model_pair(other_dir, SHAPES, seed=11)
    with open(ld.compress(other_dir, other_base, other_ft), "rb") as f:
        other = bytearray(f.read())
    other[-1] ^= 0xFF
    declared = client_mod.container_base_hash(memoryview(bytes(other)))
    d.check(len(declared) == 16 and declared.hex() != acme.get_base().hash,
            f"declared base hash {declared.hex()}")
    ld.expect_error(lambda: acme.push("other", bytes(other)), C.FAILED_PRECONDITION,
                    "PutDelta 'other'", f"compressed against base {declared.hex()}",
                    f"not the resident base {acme.get_base().hash}")
    undeclared = client_mod.container_base_hash
    client_mod.container_base_hash = lambda view: b""
    try:  # Without the declaration the server refuses it once the header has arrived
        # (before the corrupt last byte: the upload is not read whole first).
        ld.expect_error(lambda: acme.push("other", bytes(other)), C.FAILED_PRECONDITION,
                        "PutDelta 'other'", f"not the resident base {acme.get_base().hash}")
    finally:
        client_mod.container_base_hash = undeclared
    d.check(client_mod.container_base_hash(memoryview(b"not a container" * 8)) == b"",
            "a non-container declares no base hash")
    # Admin: may name a tenant.
    admin = Client(daemon.addr, token=d.ADMIN_TOKEN, tenant="acme")
    d.check(admin.task_info("chat").tenant == "acme", "admin task_info")

    def fresh():
        return {n: torch.full(s, 7.0, dtype=torch.float16) for n, s in SHAPES.items()}

    def untouched(target):
        return all(bool((t == 7.0).all()) for t in target.values())

    t = fresh()
    t["b.weight"] = torch.full((64, 128), 7.0, dtype=torch.float16)
    ld.expect_error(lambda: acme.load_into(t, "chat"), C.INVALID_ARGUMENT,
                    "tensor 'b.weight'", "shape [64, 128]", "the task has [128, 64]")
    d.check(untouched(t), "shape mismatch: the target was written")
    t = fresh()
    t["a.weight"] = torch.full((64, 128), 7.0, dtype=torch.float32)
    ld.expect_error(lambda: acme.load_into(t, "chat"), C.INVALID_ARGUMENT,
                    "tensor 'a.weight'", "torch.float32", "sends F16")
    d.check(untouched(t), "dtype mismatch: the target was written")
    t = fresh()
    del t["b.bias"]
    ld.expect_error(lambda: acme.load_into(t, "chat"), C.INVALID_ARGUMENT,
                    "1 tensor of task 'chat' not in the model: 'b.bias' (the model has")
    d.check(untouched(t), "missing name: the target was written")
    t = fresh()
    t["extra.weight"] = torch.full((3,), 7.0, dtype=torch.float16)
    ld.expect_error(lambda: acme.load_into(t, "chat"), C.INVALID_ARGUMENT,
                    "tensor 'extra.weight' of the model is not in task 'chat' (strict=True; strict=False loads the rest)")
    d.check(untouched(t), "extra name: the target was written")
    acme.load_into(t, "chat", strict=False)
    d.check(bool((t["extra.weight"] == 7.0).all()) and not bool((t["a.weight"] == 7.0).all()),
            "strict=False: task tensors must load, the extra one stay")
    t = fresh()
    acme.load_into(t, "chat", include="a.*")
    d.check(not bool((t["a.weight"] == 7.0).all()) and bool((t["b.weight"] == 7.0).all()),
            "include filter: only a.weight must load")

    # Names that are not UTF-8 (issue 11, reproduction 8). Request names are `bytes` on
    # the wire: str names go as UTF-8; a str that cannot be UTF-8 (a lone surrogate) is
    # refused before any call; raw bytes 0xff reach the server, which names the field.
    ld.expect_error(lambda: acme.task_info("t\udcff"), C.INVALID_ARGUMENT,
                    "GetTask 't\\udcff': task 't\\udcff' is not valid UTF-8")
    ld.expect_error(lambda: list(acme.stream_weights("chat", include=["\udc80"])),
                    C.INVALID_ARGUMENT, "include '\\udc80' is not valid UTF-8")
    ld.expect_error(lambda: acme.task_info(b"t\xff"), C.INVALID_ARGUMENT,
                    "GetTask: task 't\\xff' is not valid UTF-8")
    d.check(acme.task_info("chat").name == "chat", "a str task name round-trips as bytes")

    # A server slow to answer the HTTP/2 handshake (1 s: a loaded machine) is reached
    # within the call's deadline, unary and streaming. The client once set
    # grpc.min_reconnect_backoff_ms to 100 ms, which gRPC takes as the connect timeout:
    # such calls failed UNAVAILABLE "connection attempt timed out before receiving
    # SETTINGS frame" at once (deploy_backup_restore failed so under load).
    late = ld.StallingProxy(daemon.port, connect_delay=1.0)
    t0 = time.monotonic()
    d.check(Client(late.addr, token=d.ACME_TOKEN, timeout=20).task_info("chat").name == "chat",
            "GetTask through a server slow to handshake")
    d.check(time.monotonic() - t0 >= 1.0, "the handshake was not delayed")
    sd = Client(late.addr, token=d.ACME_TOKEN, timeout=20).load_state_dict("chat")
    d.check(sorted(sd) == sorted(SHAPES), f"load_state_dict through a slow handshake: {list(sd)}")
    d.log(f"ok: a server 1 s slow to handshake is reached ({time.monotonic() - t0:.1f} s)")

    # Deadlines: a stream deadline already past, and a unary one.
    ld.expect_error(lambda: list(Client(daemon.addr, token=d.ACME_TOKEN, stream_timeout=1e-6)
                                 .stream_weights("chat")), C.DEADLINE_EXCEEDED, "StreamWeights")

    def slow_reader():  # the deadline passes while the worker holds the stream
        for _ in Client(daemon.addr, token=d.ACME_TOKEN, stream_timeout=0.3).stream_weights(
                "chat", chunk_bytes=4096):
            ld.wait(0.5)

    ld.expect_error(slow_reader, C.DEADLINE_EXCEEDED, "StreamWeights 'chat'")
    ld.expect_error(lambda: Client(daemon.addr, token=d.ACME_TOKEN, stream_timeout=1e-6)
                    .load_state_dict("chat"), C.DEADLINE_EXCEEDED, "StreamWeights 'chat'")
    # A unary deadline: an in-process gRPC server whose ListTasks answers only once the
    # test has its error (a fixed 3 s answer raced a 2.5 s bound on a loaded machine).
    answer = threading.Event()

    class Slow(pb_grpc.DeltaServiceServicer):
        def ListTasks(self, request, context):
            answer.wait(60)
            return pb.ListTasksResponse()

    slow = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DeltaServiceServicer_to_server(Slow(), slow)
    slow_port = slow.add_insecure_port("127.0.0.1:0")
    slow.start()
    t0 = time.monotonic()
    ld.expect_error(lambda: Client(f"127.0.0.1:{slow_port}", timeout=0.5).list_tasks(),
                    C.DEADLINE_EXCEEDED, "ListTasks")
    waited = time.monotonic() - t0
    answer.set()
    d.check(waited < 30, f"the 0.5 s deadline was not honoured ({waited:.1f} s)")
    slow.stop(0)
    # A host without a port dials deltaserved's 50051, as deltactl --server does (gRPC
    # alone dials 443, and the client used to pass it through); a malformed address is
    # INVALID_ARGUMENT when the Client is made, before any call.
    for given, target in (("localhost", "localhost:50051"), ("[::1]", "[::1]:50051"),
                          ("10.0.0.1:7000", "10.0.0.1:7000"), ("[::1]:7000", "[::1]:7000"),
                          ("unix:/tmp/ds.sock", "unix:/tmp/ds.sock")):
        d.check(Client(given).server == target,
                f"Client({given!r}).server is {Client(given).server!r}, want {target!r}")
    saved = os.environ.get("DELTASERVE_SERVER")
    os.environ["DELTASERVE_SERVER"] = "localhost"
    d.check(Client().server == "localhost:50051",
            f"DELTASERVE_SERVER=localhost gave {Client().server!r}")
    if saved is None:
        del os.environ["DELTASERVE_SERVER"]
    else:
        os.environ["DELTASERVE_SERVER"] = saved
    for bad, what in (("::1", "needs brackets"), ("host:99999", "port must be a number"),
                      ("host:0", "port must be a number"), ("host:x", "port must be a number"),
                      (":50051", "no host"), ("unix:", "nothing after 'unix:'"),
                      ("[::1", "']' missing"),
                      ("[zz]:1", "'zz' between the brackets is not an IPv6 address"),
                      ("[zz]", "'zz' between the brackets is not an IPv6 address")):
        ld.expect_error(lambda: Client(bad), C.INVALID_ARGUMENT, f"server address {bad!r}", what)
    # A server that is not there: the call is named once (new-user trial, load_state_dict
    # on the native path: "StreamWeights 'chat': cannot reach the server at ...
    # (StreamWeights 'chat': failed to connect ...)").
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
        try:
            Client(dead, token=d.ACME_TOKEN, timeout=20).load_state_dict("chat")
            d.fail("load_state_dict from a dead server returned")
        except DeltaserveError as e:
            d.check(e.code == C.UNAVAILABLE and e.message.startswith(
                f"StreamWeights 'chat': cannot reach the server at {dead} (") and
                e.message.count("StreamWeights") == 1 and "(hint: is deltaserved running" in
                e.message, f"dead server: {e.message}")
    # A corrupted tensor: DATA_LOSS naming it (the grpcio reader's checksum is flipped on
    # arrival; the C++ client's is checked with a corrupt server below).
    real = _stream.xxhash.xxh3_64

    class Flipped:
        def __init__(self):
            self.h = real()

        def update(self, data):
            self.h.update(data)

        def intdigest(self):
            return self.h.intdigest() ^ 1

    _stream.xxhash.xxh3_64 = Flipped
    try:
        grpcio_only = Client(daemon.addr, token=d.ACME_TOKEN, timeout=20, native=False)
        ld.expect_error(lambda: list(grpcio_only.stream_weights("chat")), C.DATA_LOSS,
                        "tensor 'a.weight' checksum mismatch")
    finally:
        _stream.xxhash.xxh3_64 = real
    # A corrupted stream from a server: an in-process one whose tensor checksum is off
    # by one; load_state_dict and stream_weights refuse it on either path.
    class Corrupt(pb_grpc.DeltaServiceServicer):
        def StreamWeights(self, request, context):
            data = bytes(range(256)) * 4
            yield pb.StreamWeightsResponse(begin=pb.StreamBegin(num_tensors=1, total_bytes=1024))
            yield pb.StreamWeightsResponse(header=pb.TensorHeader(
                name="x", dtype=pb.DTYPE_U8, shape=[1024], byte_length=1024,
                xxh3_64=_stream.xxhash.xxh3_64_intdigest(data) ^ 1))
            yield pb.StreamWeightsResponse(chunk=pb.TensorChunk(offset=0, data=data))
            yield pb.StreamWeightsResponse(end=pb.StreamEnd(num_tensors=1, total_bytes=1024))

    corrupt = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DeltaServiceServicer_to_server(Corrupt(), corrupt)
    corrupt_port = corrupt.add_insecure_port("127.0.0.1:0")
    corrupt.start()
    ld.expect_error(lambda: Client(f"127.0.0.1:{corrupt_port}").load_state_dict("chat"),
                    C.DATA_LOSS, "StreamWeights 'chat'", "tensor 'x' checksum mismatch")
    ld.expect_error(lambda: list(Client(f"127.0.0.1:{corrupt_port}").stream_weights("chat")),
                    C.DATA_LOSS, "StreamWeights 'chat'", "tensor 'x' checksum mismatch")
    corrupt.stop(0)
    d.check(issubclass(DeltaserveError, Exception), "DeltaserveError is an Exception")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    # A unary call to a stopped server: the same hint as a stream's (it had grpcio's
    # text only).
    ld.expect_error(lambda: Client(daemon.addr, token=d.ACME_TOKEN, timeout=5).get_base(),
                    C.UNAVAILABLE, "GetBase", f"(hint: is deltaserved running at {daemon.addr}? "
                    "Client(server='HOST[:PORT]') or DELTASERVE_SERVER sets the address)")
    # A stream to a server that is not there fails at once, naming the address; it used
    # to wait reconnect_timeout (10 s) and say "connection dropped".
    began = time.monotonic()
    ld.expect_error(lambda: Client(daemon.addr, token=d.ACME_TOKEN).load_state_dict("chat"),
                    C.UNAVAILABLE, f"StreamWeights 'chat': cannot reach the server at {daemon.addr}",
                    f"(hint: is deltaserved running at {daemon.addr}?")
    waited = time.monotonic() - began
    # It waits up to 2 s for the channel (client_pull_sink.cc kFirstConnect), not the
    # 10 s reconnect_timeout; the rest is margin for a loaded machine.
    d.check(waited < 9.0, f"the stream to a stopped server failed after {waited:.1f} s")
    d.log("PASS: token, tenant, task, name, shape, dtype, deadline, checksum and "
          "unreachable-server errors carry their gRPC code and message")
