// A hand-assembled WebAssembly SIMD module (about 430 bytes, no toolchain) that scores every row of
// the float16 index against a query: scan(rows, query, out, n, stride) writes n float32 dot products.
//
// The rows stay float16 in the module's memory (half the bytes of float32); each 8 halves are
// widened with integer SIMD: sign-extend to 32 bits, shift left 13, clear bits 28-30. That gives
// the float32 whose value is the half's times 2^-112, exactly, subnormals included (the exponent
// field moves from bias 15 to bias 127). The query is stored times 2^112, so each product is the
// true product, then summed in float32 over 4 accumulators of 4 lanes. The sums are therefore
// not search.js's float64 ones to the last bit; search.js bounds the difference and rescores the
// candidates it cannot rule out (see WasmScan.search).
//
//   (func (export "scan") (param $rows i32) (param $q i32) (param $out i32) (param $n i32) (param $stride i32)
//     ;; stride: bytes per row, 2 x a multiple of HALVES (rows zero-padded)
//     for each row: a0..a3 = 0; for each 16 halves (HALVES = 16):
//       x = load(p);      a0 += widen(low x)  * q[0..3];  a1 += widen(high x) * q[4..7]
//       x = load(p + 16); a2 += widen(low x)  * q[8..11]; a3 += widen(high x) * q[12..15]
//     out[row] = horizontal sum of (a0 + a1) + (a2 + a3)
//     (each "+= *" one relaxed_madd when the engine has relaxed SIMD, else a mul and an add)
//
// Measured in Node 20 on this repository's 2-core machine (23,855 x 256, the demo's index): about
// 0.6 ms a scan with mul + add, 0.48 ms with relaxed_madd. Neither 32 halves a pass nor 2 or 4 rows
// a pass sharing the query loads was faster: the widening ops bound it, not loads or the loop.

const SIMD = 0xfd;
const op = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  brIf: 0x0d,
  get: 0x20,
  set: 0x21,
  tee: 0x22,
  f32store: 0x38,
  i32const: 0x41,
  i32eqz: 0x45,
  i32ltu: 0x49,
  i32add: 0x6a,
  i32mul: 0x6c,
  i32shl: 0x74,
  f32add: 0x92,
};
// SIMD opcodes (after the 0xfd prefix), as their LEB128 bytes
const simd = {
  load: [0x00],
  const: [0x0c],
  extractF32: [0x1f],
  and: [0x4e],
  extendLowS: [0xa7, 0x01], // i32x4.extend_low_i16x8_s
  extendHighS: [0xa8, 0x01],
  shl: [0xab, 0x01], // i32x4.shl
  add: [0xe4, 0x01], // f32x4.add
  mul: [0xe6, 0x01], // f32x4.mul
  madd: [0x85, 0x02], // f32x4.relaxed_madd (relaxed SIMD): a * b + c, fused or not
};
const V128 = 0x7b;
/** Halves of a row per pass of the inner loop (one accumulator per 4): rows are padded to it. */
export const HALVES = 16;
const I32 = 0x7f;

const uleb = (n) => {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const str = (s) => [...uleb(s.length), ...new TextEncoder().encode(s)];
const section = (id, bytes) => [id, ...uleb(bytes.length), ...bytes];
const vec = (items) => [...uleb(items.length), ...items.flat()];

/** Signed LEB128 (i32.const immediates). */
const sleb = (n) => {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) return [...out, b];
    out.push(b | 0x80);
  }
};

function scanBody(fma) {
  // params 0..4: rows, q, out, n, stride; locals: 5 end (of out), 6 p, 7 pq, 8 pend, then v128:
  // the accumulators (one per 4 halves of a pass), x (8 halves), qa and qb (8 query values), the mask
  const [rows, q, out, n, stride, end, p, pq, pend] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const acc = Array.from({ length: HALVES / 4 }, (_, i) => 9 + i);
  const [x, qa, qb, mask] = [9, 10, 11, 12].map((i) => i + acc.length);
  const S = (name, ...imm) => [SIMD, ...simd[name], ...imm];
  const mem = (offset) => [0x00, ...uleb(offset)]; // alignment hint 1, offset
  const maskBytes = [0xff, 0xff, 0xff, 0x8f]; // 0x8fffffff little-endian: clear bits 28-30
  const widen = (high) => [op.get, x, ...S(high ? "extendHighS" : "extendLowS"), op.i32const, 13, ...S("shl"), op.get, mask, ...S("and")];
  const term = (a, high) => {
    const qv = high ? qb : qa;
    return fma
      ? [...widen(high), op.get, qv, op.get, acc[a], ...S("madd"), op.set, acc[a]]
      : [op.get, acc[a], ...widen(high), op.get, qv, ...S("mul"), ...S("add"), op.set, acc[a]];
  };
  const pass = [];
  for (let h = 0; h < HALVES / 8; h++) {
    pass.push(op.get, pq, ...S("load", ...mem(32 * h)), op.set, qa, op.get, pq, ...S("load", ...mem(32 * h + 16)), op.set, qb);
    pass.push(op.get, p, ...S("load", ...mem(16 * h)), op.set, x, ...term(2 * h, false), ...term(2 * h + 1, true));
  }
  // out[row] = lanes of the accumulators summed pairwise
  let sum = acc.map((a) => [op.get, a]);
  while (sum.length > 1) {
    const next = [];
    for (let i = 0; i < sum.length; i += 2) next.push([...sum[i], ...sum[i + 1], ...S("add")]);
    sum = next;
  }
  const code = [
    // end = out + 4 n; p = rows
    op.get, out, op.get, n, op.i32const, 2, op.i32shl, op.i32add, op.set, end,
    op.get, rows, op.set, p,
    ...S("const", ...maskBytes, ...maskBytes, ...maskBytes, ...maskBytes), op.set, mask,
    op.block, 0x40,
    op.get, n, op.i32eqz, op.brIf, 0,
    op.loop, 0x40, // rows
    ...acc.flatMap((a) => [...S("const", ...new Array(16).fill(0)), op.set, a]),
    op.get, p, op.get, stride, op.i32add, op.set, pend,
    op.get, q, op.set, pq,
    op.loop, 0x40, // HALVES halves per pass
    ...pass,
    op.get, pq, op.i32const, ...sleb(4 * HALVES), op.i32add, op.set, pq,
    op.get, p, op.i32const, ...sleb(2 * HALVES), op.i32add, op.tee, p, op.get, pend, op.i32ltu, op.brIf, 0,
    op.end,
    ...sum[0], op.set, x,
    op.get, out,
    op.get, x, ...S("extractF32", 0), op.get, x, ...S("extractF32", 1), op.f32add,
    op.get, x, ...S("extractF32", 2), op.get, x, ...S("extractF32", 3), op.f32add, op.f32add,
    op.f32store, 0x02, 0x00,
    op.get, out, op.i32const, 4, op.i32add, op.tee, out, op.get, end, op.i32ltu, op.brIf, 0,
    op.end,
    op.end,
    op.end, // function
  ];
  const locals = vec([[...uleb(4), I32], [...uleb(acc.length + 4), V128]]);
  const body = [...locals, ...code];
  return [...uleb(body.length), ...body];
}

/**
 * The module's bytes; it imports its memory as env.memory (shared when `shared`). `fma`: each
 * product and sum as one relaxed-SIMD f32x4.relaxed_madd (fused on CPUs with FMA: about 20% faster
 * here), else f32x4.mul then f32x4.add. Either rounds at most as often as the bound in search.js allows.
 */
export function scanModuleBytes({ shared = false, fma = false } = {}) {
  const type = vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), 0x00]]);
  const limits = shared ? [0x03, ...uleb(1), ...uleb(65536)] : [0x00, ...uleb(1)];
  const imports = vec([[...str("env"), ...str("memory"), 0x02, ...limits]]);
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, type),
    ...section(2, imports),
    ...section(3, vec([[0x00]])),
    ...section(7, vec([[...str("scan"), 0x00, 0x00]])),
    ...section(10, vec([scanBody(fma)])),
  ]);
}

/** Whether this engine runs WebAssembly SIMD (it validates the module); `fma`: relaxed SIMD too. */
export function wasmSimdSupported({ fma = false } = {}) {
  try {
    return typeof WebAssembly === "object" && WebAssembly.validate(scanModuleBytes({ fma }));
  } catch {
    return false;
  }
}
