"""Client of deltaserve.v1.DeltaService for Python inference workers.

    from deltaserve import Client
    c = Client("127.0.0.1:50051", token="...")
    state = c.load_state_dict("chat")          # {name: torch.Tensor}
    c.load_into(model, "chat")                 # in place, into model's parameters

The same operations as `deltactl` (push, list, info, get-base, delete, pin, unpin, pull)
with the same environment variables: DELTASERVE_SERVER (default 127.0.0.1:50051),
DELTASERVE_TOKEN, DELTASERVE_TENANT. Every failure raises DeltaserveError (code +
message, deltaserve/errors.py). A Client is thread-safe (one gRPC channel).
"""
import json
import math
import mmap
import os

import grpc
import numpy as np
import xxhash

from deltaserve import dtypes
from deltaserve.address import server_target
from deltaserve._stream import StreamStats, verified_tensors
from deltaserve.errors import (DeltaserveError, from_os_error, from_rpc_error, invalid_argument,
                               not_found, wire_text, with_hint)
from deltaserve.v1 import delta_service_pb2 as pb
from deltaserve.v1 import delta_service_pb2_grpc as pb_grpc

# gRPC's default receive limit is 4 MiB; server chunks go up to 4 MiB plus framing.
_MAX_MESSAGE_BYTES = 64 << 20
_UPLOAD_CHUNK_BYTES = 1 << 20
# Call metadata naming the task a call is about (proto/protocol.h kTaskRouteHeader).
_ROUTE_HEADER = "x-deltaserve-task"
# The read-only unary calls are tried again when they fail UNAVAILABLE (at most twice,
# 0.1-1 s apart): a channel whose connection died with a restarted server finds out only
# when it sends the next call on it ("Socket closed"), which would otherwise fail.
_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "deltaserve.v1.DeltaService", "method": m}
             for m in ("GetTask", "ListTasks", "GetBase", "GetSideFile")],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def _seconds(value, env, default, name, zero_ok):
    """`value` (Client's argument), else $`env`, else `default`, as float seconds:
    INVALID_ARGUMENT naming the argument or variable unless a finite number >= 0
    (zero_ok) or > 0."""
    source = name
    if value is None:
        value, source = os.environ.get(env) or default, env
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        want = "0 (no pings) or a positive" if zero_ok else "a positive"
        raise invalid_argument(f"{source} must be {want} number of seconds, got {value!r}")
    return seconds


def container_base_hash(view):
    """The 16 base-hash bytes of the delta container in `view` (a uint8 memoryview), as
    its header holds them (codec/FORMAT.md: offset 16, XXH128_canonical_t), once the
    header holds (deltaserve.decode.container_header); b"" otherwise (the server then
    says what is wrong with the upload)."""
    from deltaserve.decode import container_header
    header = container_header(view)
    return b"" if header is None else header[1]


class Client:
    """Connection to one deltaserved.

    server: "host[:port]", "[v6][:port]" or "unix:PATH" (default $DELTASERVE_SERVER, else
      127.0.0.1:50051); a host without a port dials 50051, as deltactl --server does.
      DeltaserveError(INVALID_ARGUMENT) for a malformed address (deltaserve.address).
    token: bearer token (default $DELTASERVE_TOKEN; none: only a server without a config
      accepts that). tenant: tenant named in every request (default $DELTASERVE_TENANT;
      empty: the token's own; admin tokens must name one).
    tls: use TLS with the system roots; ca: path of a PEM root certificate to trust
      instead (implies TLS).
    timeout: deadline in seconds of each unary call and of a whole upload (default 60).
    stream_timeout: deadline in seconds of a whole download, resumes included (default
      None: none). retries: reconnection attempts of a download after a dropped
      connection (default 3); reconnect_timeout: seconds each attempt waits for the server
      to come back (default 10). An attempt whose wait ends without the server uses the
      next, so a download survives an outage of up to retries x reconnect_timeout seconds
      (30 s by default; within stream_timeout), resuming where it stopped; past that,
      UNAVAILABLE says how long it waited and the attempts used.
    keepalive: seconds without data from the server after which a call in progress pings
      it; keepalive_timeout: seconds a ping may go unanswered before the call fails
      UNAVAILABLE ("the server stopped answering"; a download then resumes as above).
      A frozen server or a network partition that drops packets then ends a call instead
      of hanging it; a slow server whose connection answers pings is not cut. Defaults:
      $DELTASERVE_CLIENT_KEEPALIVE_SECONDS, else 30, and
      $DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS, else 20; keepalive 0: no pings. The
      server must allow pings this often (deltaserved --min-client-ping-seconds, 5 s).
    native: load_state_dict, load_into, stream_weights and pull_dir stream through the
      project's C++ client (deltaserve/_native.py: the bytes go straight into tensor
      memory, the GIL released) when it was built; False: always through grpcio
      (deltaserve/_stream.py). Default: True unless DELTASERVE_NATIVE=0 is in the
      environment. Both give the same tensors, StreamStats and errors.
    The channel connects lazily: an unreachable server shows as UNAVAILABLE on the first
    call.
    """

    def __init__(self, server=None, token=None, tenant=None, tls=False, ca=None, timeout=None,
                 stream_timeout=None, retries=3, reconnect_timeout=10.0, native=None,
                 keepalive=None, keepalive_timeout=None):
        # A host without a port dials 50051, as deltactl --server does (gRPC: 443).
        self.server = server_target(
            server or os.environ.get("DELTASERVE_SERVER") or "127.0.0.1:50051")
        token = token if token is not None else os.environ.get("DELTASERVE_TOKEN", "")
        self.tenant = tenant if tenant is not None else os.environ.get("DELTASERVE_TENANT", "")
        if "\r" in token or "\n" in token:
            raise invalid_argument("token contains a line break")
        self.timeout = 60.0 if timeout is None else float(timeout)
        if self.timeout <= 0:
            raise invalid_argument(f"timeout must be positive, got {timeout}")
        self.stream_timeout = stream_timeout
        self.keepalive = _seconds(keepalive, "DELTASERVE_CLIENT_KEEPALIVE_SECONDS", 30.0,
                                  "keepalive", zero_ok=True)
        self.keepalive_timeout = _seconds(keepalive_timeout,
                                          "DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS", 20.0,
                                          "keepalive_timeout", zero_ok=False)
        self.retries = int(retries)
        self.reconnect_timeout = float(reconnect_timeout)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._token, self._tls, self._ca = token, bool(tls or ca), ca or ""
        from deltaserve import _native
        if native is None:
            native = os.environ.get("DELTASERVE_NATIVE", "1") != "0"
        self.native = bool(native) and _native.available()
        self._puller = None  # the C++ client of the native path, made on first use
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                   # Reconnect promptly when a restarted server comes back (resume).
                   # Not grpc.min_reconnect_backoff_ms: gRPC takes it as the minimum
                   # connect timeout (default 20 s); at 100 ms a loaded server, slow to
                   # send its HTTP/2 SETTINGS, was unreachable whatever the deadline.
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.enable_retries", 1),
                   ("grpc.service_config", _SERVICE_CONFIG)]
        if self.keepalive > 0:
            # As the C++ client (client/client.cc): pings only during calls, and not
            # limited to gRPC's default of 2 without data (a download sends none).
            options += [("grpc.keepalive_time_ms", max(1, round(self.keepalive * 1000))),
                        ("grpc.keepalive_timeout_ms",
                         max(1, round(self.keepalive_timeout * 1000))),
                        ("grpc.keepalive_permit_without_calls", 0),
                        ("grpc.http2.max_pings_without_data", 0)]
        if tls or ca:
            root = None
            if ca:
                try:
                    with open(ca, "rb") as f:
                        root = f.read()
                except OSError as e:
                    raise from_os_error(e, f"cannot read TLS root certificate {ca}") from None
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(self.server, creds, options)
        else:
            self._channel = grpc.insecure_channel(self.server, options)
        self._stub = pb_grpc.DeltaServiceStub(self._channel)
        self.last_stream = StreamStats()

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ labels and unary calls
    def _label(self, method, task):
        return f"{method} '{self.tenant}/{task}'" if self.tenant else f"{method} '{task}'"

    def _task_fields(self, method, task):
        """(label, {tenant, task} as the request's UTF-8 bytes fields)."""
        label = self._label(method, task)
        return label, {"tenant": wire_text(self.tenant, "tenant", label),
                       "task": wire_text(task, "task", label)}

    def _metadata_for(self, names):
        """The call's metadata: the bearer token and, for a call about one task (`names`:
        the request's tenant and task bytes), `x-deltaserve-task: <tenant>/<task>`, the
        key a load balancer hashes on to send a task's calls to one replica
        (deploy/haproxy/haproxy.cfg), as the C++ client sends it. A name that is not
        printable ASCII goes unrouted (gRPC metadata values are ASCII)."""
        if not names or not names["task"]:
            return self._metadata
        route = bytes(names["tenant"]) + b"/" + bytes(names["task"])
        if not all(0x20 <= c < 0x7F for c in route):
            return self._metadata
        return self._metadata + ((_ROUTE_HEADER, route.decode("ascii")),)

    def _unary(self, method, request, label, timeout=-1, names=None):
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout if timeout == -1 else timeout,
                metadata=self._metadata_for(names))
        except grpc.RpcError as e:
            raise from_rpc_error(e, label, self) from None

    # ------------------------------------------------------------ deltactl's operations
    def get_base(self):
        """BaseInfo of the resident base (hash, tensors, bytes, dtypes, path)."""
        return self._unary("GetBase", pb.GetBaseRequest(), "GetBase")

    def list_tasks(self, tenant=None):
        """ListTasksResponse (tasks, stored_bytes, quota_bytes) of `tenant` (None: the
        client's tenant; an admin with "" lists every tenant)."""
        tenant = self.tenant if tenant is None else tenant
        label = f"ListTasks '{tenant}'" if tenant else "ListTasks"
        return self._unary("ListTasks",
                           pb.ListTasksRequest(tenant=wire_text(tenant, "tenant", label)), label)

    def task_info(self, task, tensors=False):
        """TaskInfo of `task` (side_files: SideFileInfo name (str), size_bytes,
        xxh3_64); with tensors=True, per-tensor TensorSummary entries (name, dtype,
        shape, encoding, sizes, index) in container order."""
        label, names = self._task_fields("GetTask", task)
        return self._unary("GetTask", pb.GetTaskRequest(**names, include_tensors=tensors), label,
                           names=names)

    def delete(self, task):
        """Deletes `task` with its side files; returns the freed bytes (container and
        side files)."""
        label, names = self._task_fields("DeleteTask", task)
        return self._unary("DeleteTask", pb.DeleteTaskRequest(**names), label,
                           names=names).freed_bytes

    def pin(self, task, dtype=None):
        """Decodes `task` into the server cache and pins it there (in `dtype`, default the
        recorded dtypes); returns the pinned bytes. Deadline: stream_timeout."""
        label, names = self._task_fields("PinTask", task)
        request = pb.PinTaskRequest(**names, out_dtype=dtypes.to_out_proto(dtype))
        return self._unary("PinTask", request, label, timeout=self.stream_timeout,
                           names=names).pinned_bytes

    def unpin(self, task):
        label, names = self._task_fields("UnpinTask", task)
        self._unary("UnpinTask", pb.UnpinTaskRequest(**names), label, names=names)

    def push(self, task, container, overwrite=False, side_files=None):
        """Uploads a delta container (a path, or bytes-like) as `task` with its XXH3-64,
        so the server verifies it end to end (DATA_LOSS on mismatch, INVALID_ARGUMENT for
        a malformed container; nothing is stored on error). Returns the committed
        TaskInfo. A file is memory-mapped, not read into memory. The container's base hash
        is declared up front (PutDeltaMetadata.base_hash), so that a container made against
        another base is refused (FAILED_PRECONDITION) before any of its bytes is sent.
        side_files: small files stored with the task (config.json, tokenizer files...):
        a dict {name: bytes or path}, or a list of paths stored under their base names
        (deltaserve.checkpoint.side_files_from(dir) picks a checkpoint's). The server
        refuses a bad name (INVALID_ARGUMENT) or a file above its limits
        (RESOURCE_EXHAUSTED), naming the file; an overwrite replaces the old ones."""
        from deltaserve.checkpoint import read_side_files, side_file_infos
        label = self._label("PutDelta", task)
        files = read_side_files(side_files)
        if isinstance(container, (str, os.PathLike)):
            try:
                with open(container, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else b""
            except OSError as e:
                raise from_os_error(e, f"{label}: cannot read {container}") from None
        else:
            data = container
        view = memoryview(data).cast("B")
        _, names = self._task_fields("PutDelta", task)
        meta = pb.PutDeltaMetadata(**names, overwrite=overwrite,
                                   total_bytes=len(view), xxh3_64=xxhash.xxh3_64_intdigest(view),
                                   base_hash=container_base_hash(view),
                                   side_files=side_file_infos(files))

        def requests():
            yield pb.PutDeltaRequest(metadata=meta)
            for _, data in files:
                for off in range(0, len(data), _UPLOAD_CHUNK_BYTES):
                    yield pb.PutDeltaRequest(side_file_chunk=data[off:off + _UPLOAD_CHUNK_BYTES])
            for off in range(0, len(view), _UPLOAD_CHUNK_BYTES):
                yield pb.PutDeltaRequest(chunk=bytes(view[off:off + _UPLOAD_CHUNK_BYTES]))

        try:
            response = self._stub.PutDelta(requests(), timeout=self.timeout,
                                           metadata=self._metadata_for(names))
        except grpc.RpcError as e:
            details = e.details() or ""
            if details.startswith("PutDelta: "):  # the label says it already
                details = details[len("PutDelta: "):]
            raise with_hint(DeltaserveError(e.code(), f"{label}: {details}"), self) from None
        return response.task

    # ------------------------------------------------------------ weights
    def _weights_request(self, task, include, include_regex, dtype, chunk_bytes):
        if isinstance(include, str):
            include = [include]
        label, names = self._task_fields("StreamWeights", task)
        return pb.StreamWeightsRequest(
            **names, out_dtype=dtypes.to_out_proto(dtype),
            include=[wire_text(g, "include", label) for g in include or []],
            include_regex=wire_text(include_regex or "", "include_regex", label),
            chunk_bytes=chunk_bytes)

    def stream_tensors(self, task, alloc, include=None, include_regex=None, dtype=None,
                       chunk_bytes=0):
        """The StreamWeights machinery under stream_weights/load_*: yields
        (TensorHeader, uint8 buffer) per verified tensor, each written into
        alloc(header) (see deltaserve._stream.verified_tensors). Figures of the stream
        end up in self.last_stream."""
        request = self._weights_request(task, include, include_regex, dtype, chunk_bytes)
        self.last_stream = StreamStats()
        return verified_tensors(self, self._label("StreamWeights", task), request, alloc,
                                self.last_stream)

    def stream_weights(self, task, include=None, include_regex=None, dtype=None,
                       chunk_bytes=0):
        """Yields (name, numpy array) for the merged tensors of `task`, in container
        order, each after its XXH3-64 checksum matched. include: fnmatch globs (any may
        match); include_regex: a regex that must match the whole name; dtype: "f32",
        "f16" or "bf16" for every F32/F16/BF16 tensor (default: each tensor's recorded
        dtype; tensors of other dtypes, e.g. I64 or BOOL buffers, always come in their
        own). Arrays have dtypes.numpy_dtype: BF16 as uint16 and F8_* as uint8 holding
        the raw bits. A dropped connection resumes at the byte where it stopped
        (Client.retries; deltaserve._stream.verified_tensors). A filter that matches no
        tensor of the task: NOT_FOUND once the stream ends, as deltactl pull says it."""
        count = 0
        for name, proto_dtype, shape, buf in self._tensor_stream(task, include, include_regex,
                                                                  dtype, chunk_bytes):
            count += 1
            yield name, buf.view(dtypes.numpy_dtype(proto_dtype)).reshape(shape)
        if count == 0 and (include or include_regex):
            from deltaserve.torch_io import no_match_error
            raise no_match_error(self, task, include, include_regex)

    def _tensor_stream(self, task, include=None, include_regex=None, dtype=None,
                       chunk_bytes=0):
        """Yields (name, proto dtype, shape tuple, uint8 numpy array of its own) for every
        verified tensor of `task`: through the C++ client (deltaserve._native.stream)
        when self.native, else through grpcio (stream_tensors)."""
        if self.native:
            from deltaserve import _native
            yield from _native.stream(self, task, include, include_regex, dtype, chunk_bytes)
            return

        def alloc(header):
            return np.empty(header.byte_length, dtype=np.uint8)

        for header, buf in self.stream_tensors(task, alloc, include, include_regex, dtype,
                                               chunk_bytes):
            yield header.name, header.dtype, tuple(header.shape), buf

    def load_state_dict(self, task, include=None, include_regex=None, dtype=None,
                        progress=None):
        """{name: torch.Tensor} of the merged tensors of `task` (CPU, in container order,
        dtypes.torch_dtype: BF16 as torch.bfloat16, I64 as torch.int64, ...), checksums
        verified; arguments as stream_weights (a filter that matches no tensor: NOT_FOUND,
        "no tensor matches the filter"). progress: None or callable(name), called after
        each tensor is verified and in place. On the native path the tensors are views
        of one buffer, freed when the last of them goes."""
        from deltaserve.torch_io import load_state_dict
        return load_state_dict(self, task, include, include_regex, dtype, progress)

    def load_into(self, target, task, strict=True, include=None, include_regex=None,
                  dtype=None, progress=None, atomic=False):
        """Writes the merged tensors of `task` into the existing storage of `target` (a
        torch.nn.Module, or a dict of torch tensors or numpy arrays) in place: no second
        copy of the model is held. Checked before any byte is streamed, target untouched
        on error:
        - strict=True (default): every task tensor (passing include= / include_regex=)
          must be in target, and without a filter target may hold no tensor the task
          lacks. strict=False, as torch's load_state_dict(strict=False): names on one
          side only are skipped (only the model's tensors are streamed) and reported in
          the returned StreamStats' missing_keys (model tensors that got nothing) and
          unexpected_keys (task tensors the model lacks); at least one must match.
          Either way INVALID_ARGUMENT names the tensor.
        - every loaded tensor must have the task's shape and dtype (`dtype` if given,
          else the recorded one) and be loadable (deltaserve.torch_io: not on the meta
          device, dense, not quantized, contiguous); INVALID_ARGUMENT names it and its
          device, layout or dtype.
        - a filter that matches no tensor of the task: NOT_FOUND.
        Returns the StreamStats (client.last_stream) with missing_keys / unexpected_keys.
        atomic=False (default): on a later error (DATA_LOSS, UNAVAILABLE after the
        retries, ...) target may hold a mix of old and new tensors. atomic=True: the
        tensors are streamed into a new buffer first and copied into target only once
        every one of them is verified, so target is either all old or all new; it costs
        memory for a second copy of the loaded tensors for the time of the load, and
        one extra memory copy. progress: as for load_state_dict."""
        from deltaserve.torch_io import load_into
        return load_into(self, target, task, strict, include, include_regex, dtype, progress,
                         atomic)

    # ------------------------------------------------------------ side files, checkpoints
    def side_file(self, task, name):
        """The bytes of side file `name` of `task`, size and XXH3-64 verified."""
        from deltaserve.checkpoint import get_side_file
        return get_side_file(self, task, name)

    def pull_dir(self, task, out_dir, shard_bytes=5_000_000_000, dtype=None):
        """Writes `task` into `out_dir` as a Hugging Face checkpoint directory (sharded
        safetensors, model.safetensors.index.json, side files), as `deltactl pull
        --out-dir` does; see deltaserve.checkpoint.pull_dir."""
        from deltaserve.checkpoint import pull_dir
        return pull_dir(self, task, out_dir, shard_bytes, dtype)

    # ------------------------------------------------------------ worker-side decode
    def fetch_delta(self, task):
        """The task's compressed delta container (StreamDelta), size and XXH3-64
        verified, as a bytearray; decode it with deltaserve.decode.apply_delta."""
        from deltaserve.decode import fetch_delta
        return fetch_delta(self, task)

    def load_delta_into(self, target, task, base, strict=True, dtype=None, threads=None,
                        atomic=False):
        """fetch_delta + deltaserve.apply_delta(target, ..., base) overlapped: records
        are decoded + merged in place while the rest of the container arrives; see
        deltaserve.decode.load_delta_into (strict and atomic as for load_into). Returns
        a deltaserve.DeltaStats: an int, the number of tensors written (as before), that
        also carries tensors, bytes, seconds, missing_keys and unexpected_keys."""
        from deltaserve.decode import load_delta_into
        return load_delta_into(self, target, task, base, strict, dtype, threads, atomic)
