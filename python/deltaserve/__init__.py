"""deltaserve: load finetuned tasks served by deltaserved into Python inference workers.

Client (deltaserve/client.py): deltactl's operations, stream_weights, load_state_dict,
load_into, fetch_delta, side files (push(side_files=...), side_file) and pull_dir (a
Hugging Face checkpoint directory; deltaserve/checkpoint.py). LocalBase and apply_delta (deltaserve/decode.py): decode a
delta in the worker through the C++ codec; Client.load_delta_into streams and decodes
at once. DeltaserveError (deltaserve/errors.py): every failure, with a gRPC code.
"""
from deltaserve.client import Client
from deltaserve.errors import DeltaserveError
from deltaserve._stream import StreamStats
from deltaserve.decode import LocalBase, apply_delta, fetch_delta

__all__ = ["Client", "DeltaserveError", "StreamStats", "LocalBase", "apply_delta", "fetch_delta"]
