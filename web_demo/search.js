// The index: (N, D) float16 class vectors searched by one mat-vec and an exact top-k whose ties
// break towards the lower id (bundle/search.py).
//
// Two scans give the same ids and scores, bit for bit:
// - "wasm-simd" (scan_wasm.js): the float16 rows stay in a WebAssembly memory and are scored in
//   float32 SIMD; then every row whose float32 score is within twice a proven error bound of the
//   k-th best is rescored exactly as the JS scan scores it (float64 sums in dimension order,
//   rounded to float32), and the top-k is taken from those. A row of the exact top-k can never
//   be left out (see WasmScan.search), so ties and near-ties come out as in the JS scan.
// - "js": the rows decoded once to float32 and summed in float64 (scoresOf), when WebAssembly
//   SIMD is missing or ?scan=js asks for it.

import { HALVES, scanModuleBytes, wasmSimdSupported } from "./scan_wasm.js";

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

/** Little-endian float16 bytes (ArrayBuffer or Uint16Array) -> Float32Array. */
export function decodeFloat16(buffer) {
  const bits = buffer instanceof Uint16Array ? buffer : new Uint16Array(buffer);
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = F16_TABLE[bits[i]];
  return out;
}

/**
 * Dot products of `query` (D) with each row of `matrix` (N*D, row-major), summed in float64 in
 * dimension order and rounded to float32. Four rows per pass share each query value: about 1.9x
 * faster in V8 than one row at a time, with the same sums.
 */
export function scoresOf(query, matrix, n, d) {
  const scores = new Float32Array(n);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    const b0 = r * d;
    const b1 = b0 + d;
    const b2 = b1 + d;
    const b3 = b2 + d;
    for (let j = 0; j < d; j++) {
      const x = query[j];
      s0 += matrix[b0 + j] * x;
      s1 += matrix[b1 + j] * x;
      s2 += matrix[b2 + j] * x;
      s3 += matrix[b3 + j] * x;
    }
    scores[r] = s0;
    scores[r + 1] = s1;
    scores[r + 2] = s2;
    scores[r + 3] = s3;
  }
  for (; r < n; r++) {
    let s = 0;
    const base = r * d;
    for (let j = 0; j < d; j++) s += matrix[base + j] * query[j];
    scores[r] = s;
  }
  return scores;
}

/** The k best (id, score) by descending score, ties towards the lower id. */
export function topk(scores, k) {
  k = Math.min(k, scores.length);
  const ids = [];
  const better = (a, b) => scores[a] > scores[b] || (scores[a] === scores[b] && a < b);
  for (let i = 0; i < scores.length; i++) {
    if (ids.length === k && !better(i, ids[k - 1])) continue;
    let pos = ids.length;
    while (pos > 0 && better(i, ids[pos - 1])) pos--;
    ids.splice(pos, 0, i);
    if (ids.length > k) ids.pop();
  }
  return ids.map((id) => ({ id, score: scores[id] }));
}

/** Row `id` of the float16 `bits` (N*D) scored against `query` exactly as scoresOf scores it. */
function rowScore(query, bits, id, d) {
  let s = 0;
  const base = id * d;
  for (let j = 0; j < d; j++) s += F16_TABLE[bits[base + j]] * query[j];
  return Math.fround(s);
}

const HALF_EXP = 0x7c00; // a half with every exponent bit set is an infinity or a NaN
const TWO_112 = 2 ** 112;
const U32 = 2 ** -24; // float32 unit roundoff

/** The float16 index scanned by the WebAssembly SIMD module, with the exact rescoring above. */
class WasmScan {
  /** -> WasmScan, or {note} saying why the index cannot use it. */
  static async create(bits, n, d, fma) {
    let maxNorm2 = 0;
    for (let r = 0; r < n; r++) {
      let s = 0;
      for (let j = r * d, end = j + d; j < end; j++) {
        const h = bits[j];
        if ((h & HALF_EXP) === HALF_EXP) return { note: `the index has a non-finite value (row ${r})` };
        const v = F16_TABLE[h];
        s += v * v;
      }
      if (s > maxNorm2) maxNorm2 = s;
    }
    // the module's layout: rows zero-padded to dp halves, a multiple of its pass (HALVES)
    const dp = Math.ceil(d / HALVES) * HALVES;
    const np = n;
    const stride = dp * 2;
    const queryAt = np * stride;
    const outAt = queryAt + dp * 4;
    const bytes = outAt + np * 4;
    const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
    const { instance } = await WebAssembly.instantiate(scanModuleBytes({ fma }), { env: { memory } });
    const rows = new Uint16Array(memory.buffer, 0, np * dp);
    if (dp === d) rows.set(bits);
    else for (let r = 0; r < n; r++) rows.set(bits.subarray(r * d, (r + 1) * d), r * dp);
    const scan = new WasmScan();
    Object.assign(scan, { instance, memory, n, np, d, dp, stride, queryAt, outAt, maxNorm: Math.sqrt(maxNorm2) });
    scan.kernel = fma ? "relaxed-madd" : "mul-add";
    scan.query = new Float32Array(memory.buffer, queryAt, dp);
    scan.scores = new Float32Array(memory.buffer, outAt, n);
    scan.candidates = 0; // rows rescored by the last search (a test and benchmark figure)
    return scan;
  }

  /**
   * The exact top-k of `query` over float16 `bits`, or null when the query is not finite or too
   * large for the scaled float32 scan (the caller then runs the JS scan).
   *
   * Why it is exact: let w be the module's float32 score of a row and x the JS scan's. Both are
   * within (m + 1) u sum|q_j v_j| <= (m + 1) u |q| |v| of the true dot product (u = 2^-24; m adds
   * in any order, m <= D + 16, and x's single rounding of a float64 sum), so |w - x| <= eps with
   * eps = 2 (D + 24) u |q| max|v| (a factor 2 to spare). Let T be the k-th best w. The k rows at
   * or above T have x >= T - eps, so the k-th best x is >= T - eps, and every row of the exact
   * top-k has x >= T - eps, hence w >= T - 2 eps. Rescoring every row with w >= T - 2 eps and
   * taking the top-k of those (ties towards the lower id) is therefore the JS scan's top-k.
   */
  search(query, bits, k) {
    const { n, d, query: q, scores } = this;
    let norm2 = 0;
    for (let j = 0; j < d; j++) {
      const v = query[j];
      if (!(Math.abs(v) < 16384)) return null; // NaN, infinite, or would overflow once times 2^112
      norm2 += v * v;
      q[j] = v * TWO_112; // exact: a power of two
    }
    this.instance.exports.scan(0, this.queryAt, this.outAt, this.np, this.stride);
    k = Math.min(k, n);
    if (k <= 0) return [];
    // T: the k-th best float32 score (a sorted list of the k best values)
    const best = new Float64Array(k).fill(-Infinity);
    let kth = -Infinity;
    for (let i = 0; i < n; i++) {
      const s = scores[i];
      if (s <= kth) continue;
      let pos = k - 1;
      while (pos > 0 && best[pos - 1] < s) {
        best[pos] = best[pos - 1];
        pos--;
      }
      best[pos] = s;
      kth = best[k - 1];
    }
    const eps = 2 * (this.dp + 24) * U32 * Math.sqrt(norm2) * this.maxNorm + 1e-30;
    const floor = kth - 2 * eps;
    const ids = [];
    for (let i = 0; i < n; i++) if (scores[i] >= floor) ids.push(i);
    this.candidates = ids.length;
    const exact = new Map(ids.map((id) => [id, rowScore(query, bits, id, d)]));
    ids.sort((a, b) => exact.get(b) - exact.get(a) || a - b);
    return ids.slice(0, k).map((id) => ({ id, score: exact.get(id) }));
  }
}

export class TextIndex {
  /**
   * `f16` (ArrayBuffer of N*D little-endian halves), `texts` (N). `scan`: "auto" (WebAssembly
   * SIMD when the browser has it), "wasm" (the same, named), or "js". The scan that runs is
   * `path` ("wasm-simd" or "js"), and `note` says why it is not WebAssembly SIMD. `fma`: use
   * relaxed SIMD's fused multiply-add when the browser has it (`kernel` says which ran).
   */
  static async create(f16, texts, n, d, { scan = "auto", fma = true } = {}) {
    if (!["auto", "wasm", "js"].includes(scan)) throw new Error(`?scan=${scan}: use auto, wasm or js`);
    const bits = new Uint16Array(f16);
    const index = new TextIndex(bits, texts, n, d);
    if (scan === "js") index.note = "JS asked for (?scan=js)";
    else if (!wasmSimdSupported()) index.note = "this browser has no WebAssembly SIMD";
    else {
      try {
        const made = await WasmScan.create(bits, n, d, fma && wasmSimdSupported({ fma: true }));
        if (made instanceof WasmScan) index.wasm = made;
        else index.note = made.note;
      } catch (e) {
        index.note = `WebAssembly scan failed to start (${e.message || e})`;
      }
    }
    index.path = index.wasm ? "wasm-simd" : "js";
    index.kernel = index.wasm ? index.wasm.kernel : "js";
    if (!index.wasm) index._vectors = decodeFloat16(bits); // decoded at load, not in the first search
    return index;
  }

  constructor(bits, texts, n, d) {
    this.bits = bits; // Uint16Array (N*D) float16
    this.texts = texts;
    this.n = n;
    this.d = d;
    this.wasm = null;
    this.path = "js";
    this.note = "";
    this.lastPath = null; // the scan the last search ran ("js" for a query the WASM scan refuses)
    this._vectors = null;
  }

  /** The rows decoded to float32 (N*D), made on first use: only the JS scan needs all of them. */
  get vectors() {
    if (!this._vectors) this._vectors = decodeFloat16(this.bits);
    return this._vectors;
  }

  /** Row `id` as float32 (D). */
  vector(id) {
    return decodeFloat16(this.bits.subarray(id * this.d, (id + 1) * this.d));
  }

  /** query (D): the embedding, as float32 (an Array is rounded to float32 first, as both scans need). */
  search(query, k = 5) {
    if (!(query instanceof Float32Array)) query = Float32Array.from(query);
    let hits = this.wasm ? this.wasm.search(query, this.bits, k) : null;
    this.lastPath = hits ? "wasm-simd" : "js";
    if (!hits) hits = topk(scoresOf(query, this.vectors, this.n, this.d), k);
    return hits.map((h) => ({ ...h, text: this.texts[h.id] }));
  }
}
