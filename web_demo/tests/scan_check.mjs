// The WebAssembly SIMD scan against the plain-JS scan, in Node (used by tests/web): random float16
// indexes with exact duplicates, near-duplicates one float16 step apart, subnormal halves and a
// dimension that is not a multiple of 16, with both kernels (relaxed-SIMD fused multiply-add when
// this engine has it: Node 20 needs --experimental-wasm-relaxed-simd); prints one JSON object.
//
//   node [--experimental-wasm-relaxed-simd] web_demo/tests/scan_check.mjs [--queries N] [--seed S]

import { wasmSimdSupported } from "../scan_wasm.js";
import { TextIndex, topk } from "../search.js";

const args = process.argv.slice(2);
const opt = (name, fallback) => (args.includes(name) ? parseInt(args[args.indexOf(name) + 1], 10) : fallback);
const queries = opt("--queries", 40);
let seed = opt("--seed", 1) >>> 0;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0; // mulberry32
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** float -> nearest float16 bits (normal range and subnormals; enough for unit vectors). */
function toHalf(x) {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const a = Math.abs(x);
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24); // subnormal (or 0x0400, the least normal)
  const e = Math.floor(Math.log2(a));
  let m = Math.round((a / 2 ** e - 1) * 1024);
  let ee = e;
  if (m === 1024) {
    m = 0;
    ee += 1;
  }
  return sign | ((ee + 15) << 10) | m;
}

function makeIndex(n, d) {
  const bits = new Uint16Array(n * d);
  for (let r = 0; r < n; r++) {
    const v = Array.from({ length: d }, gauss);
    const norm = Math.hypot(...v);
    for (let j = 0; j < d; j++) bits[r * d + j] = toHalf(v[j] / norm);
    bits[r * d + (r % d)] = (r & 1 ? 0x8000 : 0) | (r % 7); // a subnormal (or zero) in every row
  }
  // ties: row a copied to later rows; near-ties: the copy one float16 step up or down in its subnormal
  const groups = [];
  for (let g = 0; g < Math.max(1, Math.floor(n / 20)); g++) {
    const a = Math.floor(rand() * n);
    const group = [a];
    for (let c = 0; c < 3; c++) {
      const b = Math.floor(rand() * n);
      if (group.includes(b)) continue;
      bits.copyWithin(b * d, a * d, (a + 1) * d);
      if (c > 0) bits[b * d + (a % d)] += c === 1 ? 1 : -1 + 2 * ((bits[b * d + (a % d)] & 0x3ff) === 0);
      group.push(b);
    }
    groups.push(group);
  }
  return { bits, groups };
}

const report = { cases: [], mismatches: [], rawOrderDiffers: 0, searches: 0, candidatesMax: 0 };
report.relaxedSimd = wasmSimdSupported({ fma: true });
for (const [n, d, k, fma] of [
  [3000, 256, 10, false],
  [3000, 256, 10, true],
  [2000, 100, 5, false],
  [2000, 100, 5, true],
  [7, 16, 10, true],
  [500, 40, 1, false],
]) {
  const { bits, groups } = makeIndex(n, d);
  const wasm = await TextIndex.create(bits.buffer, new Array(n).fill(""), n, d, { fma });
  const js = await TextIndex.create(bits.buffer, new Array(n).fill(""), n, d, { scan: "js" });
  report.cases.push({ n, d, k, path: wasm.path, kernel: wasm.kernel, note: wasm.note, jsPath: js.path });
  const rows = js.vectors;
  for (let i = 0; i < queries; i++) {
    let q;
    if (i % 3 === 0) {
      // a query equal to a duplicated row (its ties and near-ties at the top), slightly perturbed
      const g = groups[i % groups.length];
      q = Float32Array.from(rows.subarray(g[0] * d, (g[0] + 1) * d), (v) => v + (i % 2 ? 0 : 1e-3 * gauss()));
    } else q = Float32Array.from({ length: d }, gauss);
    const a = wasm.search(q, k);
    const b = js.search(q, k);
    report.searches += 1;
    report.candidatesMax = Math.max(report.candidatesMax, wasm.wasm ? wasm.wasm.candidates : 0);
    if (wasm.lastPath !== "wasm-simd" || JSON.stringify(a) !== JSON.stringify(b)) {
      report.mismatches.push({ n, d, k, i, wasm: a, js: b, lastPath: wasm.lastPath });
    }
    // how often the float32 scores alone would have given another top-k (what the rescoring fixes)
    if (wasm.wasm) {
      const raw = topk(Float32Array.from(wasm.wasm.scores), k).map((h) => h.id);
      if (JSON.stringify(raw) !== JSON.stringify(b.map((h) => h.id))) report.rawOrderDiffers += 1;
    }
  }
  // a query the scaled scan cannot take falls back to the JS scan, with the same answer
  const big = Float32Array.from({ length: d }, (_, j) => (j === 0 ? 1e6 : 0));
  const fell = wasm.search(big, k);
  report.bigQuery = { lastPath: wasm.lastPath, same: JSON.stringify(fell) === JSON.stringify(js.search(big, k)) };
}
// a non-finite index value keeps the index on the JS scan, saying why
const bad = new Uint16Array(64 * 16).fill(0x3c00);
bad[5 * 16 + 3] = 0x7c00;
const refused = await TextIndex.create(bad.buffer, new Array(64).fill(""), 64, 16);
report.nonFinite = { path: refused.path, note: refused.note };
process.stdout.write(JSON.stringify(report) + "\n");
