import json, numpy as np, struct, sys
d='/work/shared/models/faceres/'
def load(name):
    m=json.load(open(d+name+'.json')); out={}
    for g in m['weightsManifest']:
        buf=b''.join(open(d+p,'rb').read() for p in g['paths']); off=0
        for w in g['weights']:
            n=int(np.prod(w['shape'])) if w['shape'] else 1
            q=w.get('quantization')
            if q and q['dtype']=='float16':
                a=np.frombuffer(buf,np.float16,n,off).astype(np.float32); off+=2*n
            elif w['dtype']=='float32':
                a=np.frombuffer(buf,np.float32,n,off); off+=4*n
            else:
                off+=4*n; continue
            out[w['name']]=a.reshape(w['shape'])
    return out
b=load('faceres'); f=load('faceres-deep')
tot=0
with open('/tmp/cc/faceres_delta.bin','wb') as o:
    for k in b:
        if b[k].ndim<2 or b[k].size<4096: continue
        dl=(f[k].astype(np.float32)-b[k]).astype(np.float32)
        o.write(struct.pack('<I',len(k))+k.encode()+struct.pack('<I',dl.ndim)+struct.pack('<%dq'%dl.ndim,*dl.shape))
        o.write(dl.tobytes()); tot+=dl.size
        print(k, dl.shape, '%.3g'%np.linalg.norm(dl), '%.3g'%(np.linalg.norm(dl)/np.linalg.norm(f[k])))
print('total', tot, 'all', sum(v.size for v in b.values()))
