// Runs a TF.js graph model with TensorFlow.js itself (pure-JS CPU backend) on inputs
// given as raw little-endian float32, to check the torch interpreter (faceres_torch.py).
// Usage: node tfjs_run.js MODEL_JSON INPUT_F32 N H W C OUT_JSON OUTPUT_NODE...
// Writes {output node: flat array of float32 values, "shapes": {...}} to OUT_JSON.
// Needs @tensorflow/tfjs on NODE_PATH (setup.sh installs it into .cache/npm).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelJson, inputPath, n, h, w, c, outPath, ...outputs] = process.argv.slice(2);
  const mj = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const dir = path.dirname(modelJson);
  const specs = [];
  const bufs = [];
  for (const group of mj.weightsManifest) {
    for (const p of group.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(bufs);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  await tf.setBackend('cpu');
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: mj.modelTopology, weightSpecs: specs, weightData,
    format: mj.format, generatedBy: mj.generatedBy, convertedBy: mj.convertedBy,
  }));
  const raw = fs.readFileSync(inputPath);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const x = tf.tensor4d(data, [Number(n), Number(h), Number(w), Number(c)]);
  let res = model.execute(x, outputs);
  if (!Array.isArray(res)) res = [res];
  const out = { shapes: {}, backend: tf.getBackend(), version: tf.version.tfjs };
  outputs.forEach((name, i) => {
    out[name] = Array.from(res[i].dataSync());
    out.shapes[name] = res[i].shape;
  });
  fs.writeFileSync(outPath, JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
