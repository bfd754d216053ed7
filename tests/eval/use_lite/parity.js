// Runs the REAL USE-lite TF.js graph (pure-JS @tensorflow/tfjs, cpu backend) on sentences.
// Usage: node parity.js MODEL_DIR IN.json OUT.json [ids-only]
//   IN.json: {"texts": [...]}. OUT.json: {"ids": [[...]], "embeddings": [[512 floats]...],
//   "tfjs_version", "tokenizer_version"}. Token ids come from the tokenizer of
//   @tensorflow-models/universal-sentence-encoder, fed as the graph's sparse inputs
//   (indices [[row, position]], values) exactly as its embed() does.
const path = require('path');
const fs = require('fs');
const cache = path.join(__dirname, '.cache', 'node_modules');
const tf = require(path.join(cache, '@tensorflow/tfjs'));
const {Tokenizer} = require(path.join(cache,
    '@tensorflow-models/universal-sentence-encoder/dist/tokenizer'));

async function main() {
  const [dir, inPath, outPath] = process.argv.slice(2);
  const model = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const specs = [];
  const bufs = [];
  for (const g of model.weightsManifest) {
    for (const w of g.weights) specs.push(w);
    for (const p of g.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(bufs);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  await tf.setBackend('cpu');
  const gm = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs: specs, weightData}));
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8'));
  const tok = new Tokenizer(vocab);
  const input = JSON.parse(fs.readFileSync(inPath, 'utf8'));
  const ids = input.texts.map(t => tok.encode(t));
  const out = {ids, embeddings: []};
  if (process.argv[5] === 'ids-only') {
    fs.writeFileSync(outPath, JSON.stringify(out));
    return;
  }
  // One sentence per call and one batched call (padding must not change results).
  const run = async (batch) => {
    const flatIdx = [];
    const flatVal = [];
    batch.forEach((arr, r) => arr.forEach((v, i) => { flatIdx.push([r, i]); flatVal.push(v); }));
    const indices = tf.tensor2d(flatIdx, [flatIdx.length, 2], 'int32');
    const values = tf.tensor1d(flatVal, 'int32');
    const res = await gm.executeAsync({indices, values});
    const arr = await res.array();
    tf.dispose([indices, values, res]);
    return arr;
  };
  out.embeddings = await run(ids);
  out.single = [];
  for (const x of ids) out.single.push((await run([x]))[0]);
  out.tfjs_version = tf.version.tfjs;
  out.tokenizer_version = require(path.join(cache,
      '@tensorflow-models/universal-sentence-encoder/package.json')).version;
  fs.writeFileSync(outPath, JSON.stringify(out));
}
main().catch(e => { console.error(e); process.exit(1); });
