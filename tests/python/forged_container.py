"""Forged delta containers for tests (codec/FORMAT.md, "Record" and "Trailer"): a real
container with one record's fields edited and the record and trailer checksums
recomputed, so that framing, checksums and base hash all hold and only the checks
against the base (codec/record_checks.h) can refuse it. Needs the xxhash module."""
import struct

import xxhash

# Record fields after an unchanged record's shapes: rows, cols, payload and extra-rows
# lengths, all zero.
EMPTY = struct.pack("<qqQQ", 0, 0, 0, 0)


def split(container):
    """(header bytes, [record bytes]) of a container."""
    hdr_len, = struct.unpack_from("<I", container, 12)
    recs, off = [], hdr_len
    while container[off:off + 4] == b"DRec":
        length, = struct.unpack_from("<Q", container, off + 4)
        recs.append(bytes(container[off:off + length]))
        off += length
    return bytes(container[:hdr_len]), recs


def fields(rec):
    """name, dtype, enc (numbers as stored), shape, bshape, rest (from rows on)."""
    nl, = struct.unpack_from("<H", rec, 12)
    p = 14 + nl
    dtype, enc, rank, brank = rec[p:p + 4]
    shape = list(struct.unpack_from(f"<{rank}q", rec, p + 4))
    bshape = list(struct.unpack_from(f"<{brank}q", rec, p + 4 + 8 * rank))
    return dict(name=rec[14:14 + nl], dtype=dtype, enc=enc, shape=shape, bshape=bshape,
                rest=rec[p + 4 + 8 * (rank + brank):-8])


def build(f):
    """A record's bytes from fields(), its length and checksum recomputed."""
    body = bytearray(b"DRec" + bytes(8) + struct.pack("<H", len(f["name"])) + f["name"]
                     + bytes([f["dtype"], f["enc"], len(f["shape"]), len(f["bshape"])])
                     + struct.pack(f"<{len(f['shape'])}q", *f["shape"])
                     + struct.pack(f"<{len(f['bshape'])}q", *f["bshape"]) + f["rest"])
    struct.pack_into("<Q", body, 4, len(body) + 8)
    return bytes(body) + struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(body)))


def assemble(header, recs):
    """header || records || trailer (record count, total size, chained checksum)."""
    total = len(header) + sum(len(r) for r in recs) + 24
    tail = b"DEnd" + struct.pack("<IQ", len(recs), total)
    h = xxhash.xxh3_64()
    h.update(tail)
    h.update(header[-8:])
    for r in recs:
        h.update(r[-8:])
    return header + b"".join(recs) + tail + struct.pack("<Q", h.intdigest())


def unchanged(dtype, shape=None):
    """An edit: the record claims to be its base tensor bit for bit, in `dtype` (its
    number, e.g. 5 = I32), with `shape` (default: its own)."""
    def edit(f):
        s = shape or f["shape"]
        return dict(f, enc=0, dtype=dtype, shape=s, bshape=s, rest=EMPTY)
    return edit


def forge(container, name, edit):
    """`container` with the record of tensor `name` (bytes) replaced by edit(fields)."""
    header, recs = split(container)
    out = [build(edit(fields(r))) if fields(r)["name"] == name else r for r in recs]
    return assemble(header, out)
