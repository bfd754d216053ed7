"""deltaserve: load finetuned tasks served by deltaserved into Python inference workers.

Client (deltaserve/client.py): deltactl's operations, stream_weights, load_state_dict,
load_into. DeltaserveError (deltaserve/errors.py): every failure, with a gRPC code.
"""
from deltaserve.client import Client
from deltaserve.errors import DeltaserveError
from deltaserve._stream import StreamStats

__all__ = ["Client", "DeltaserveError", "StreamStats"]
