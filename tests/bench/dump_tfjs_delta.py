#!/usr/bin/python3
"""Dumps finetuned - base float32 deltas of a TF.js graph-model pair for dct_study.

Usage: dump_tfjs_delta.py BASE.json FINETUNED.json OUT.bin [MIN_ELEMENTS]
Writes, for every float tensor of rank >= 2 with at least MIN_ELEMENTS (default 16384,
the container's min_dct_elements) elements present in both models:
  u32 name_len, name, u32 ndim, i64 dims[ndim], f32 delta[prod(dims)]   (little-endian)
Handles float32 weights and float16-quantized ones (quantization.dtype == float16).
"""
import json
import os
import struct
import sys

import numpy as np


def load(path):
    model = json.load(open(path))
    folder = os.path.dirname(path)
    out = {}
    for group in model['weightsManifest']:
        buf = b''.join(open(os.path.join(folder, p), 'rb').read() for p in group['paths'])
        off = 0
        for w in group['weights']:
            n = int(np.prod(w['shape'])) if w['shape'] else 1
            q = w.get('quantization')
            if q and q['dtype'] == 'float16':
                a = np.frombuffer(buf, np.float16, n, off).astype(np.float32)
                off += 2 * n
            elif q:
                raise SystemExit('unsupported quantization %s for %s' % (q['dtype'], w['name']))
            else:
                off += 4 * n  # float32 and int32 are both 4 bytes
                if w['dtype'] != 'float32':
                    continue
                a = np.frombuffer(buf, np.float32, n, off - 4 * n)
            out[w['name']] = a.reshape(w['shape'])
    return out


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    base, ft = load(sys.argv[1]), load(sys.argv[2])
    min_elements = int(sys.argv[4]) if len(sys.argv) > 4 else 16384
    total = 0
    with open(sys.argv[3], 'wb') as o:
        for name, b in base.items():
            if b.ndim < 2 or b.size < min_elements or name not in ft:
                continue
            d = (ft[name].astype(np.float32) - b).astype(np.float32)
            o.write(struct.pack('<I', len(name)) + name.encode())
            o.write(struct.pack('<I', d.ndim) + struct.pack('<%dq' % d.ndim, *d.shape))
            o.write(d.tobytes())
            total += d.size
    print('wrote %s: %d weights' % (sys.argv[3], total))


if __name__ == '__main__':
    main()
