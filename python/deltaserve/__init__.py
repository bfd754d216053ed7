"""deltaserve: load finetuned tasks served by deltaserved into Python inference workers.

Client (deltaserve/client.py): deltactl's operations, stream_weights, load_state_dict,
load_into, fetch_delta, side files (push(side_files=...), side_file) and pull_dir (a
Hugging Face checkpoint directory; deltaserve/checkpoint.py). LocalBase and apply_delta (deltaserve/decode.py): decode a
delta in the worker through the C++ codec; Client.load_delta_into streams and decodes
at once; both return a DeltaStats (an int: the tensors written, with the figures).
StreamStats: figures of a stream (Client.last_stream, what load_into returns).
DeltaserveError (deltaserve/errors.py): every failure, with a gRPC code. The package is
used as built (PYTHONPATH=<build>/python): the source tree lacks the generated stubs."""
import importlib as _importlib
import os as _os

try:
    _importlib.import_module("deltaserve.v1.delta_service_pb2")
except ImportError as _e:
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"the deltaserve package at {_here} has no gRPC stubs (deltaserve/v1, generated "
        f"from proto/ by the build; {_e}): import the built package, not the source tree "
        "python/: build target deltaserve_python (ninja -C build deltaserve_python), then "
        "PYTHONPATH=<build>/python (e.g. build/python) with /usr/bin/python3, the "
        "interpreter its native modules are built for") from None

from deltaserve.client import Client  # noqa: E402
from deltaserve.errors import DeltaserveError  # noqa: E402
from deltaserve._stream import StreamStats  # noqa: E402
from deltaserve.decode import DeltaStats, LocalBase, apply_delta, fetch_delta  # noqa: E402

__all__ = ["Client", "DeltaserveError", "StreamStats", "DeltaStats", "LocalBase", "apply_delta",
           "fetch_delta"]
