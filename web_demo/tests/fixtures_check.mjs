// The language-neutral fixtures (tests/fixtures/{topk,fp16,nearest_texts,resize_plans}.json) against the page's
// own modules, in Node: the same cases Python (tests/bundle/test_fixtures.py) and the Kotlin core
// (FixturesTest.kt) pass. Prints one JSON line: case counts and every mismatch.
// Given a vocab.txt (all-MiniLM-L6-v2's, the one tokenizer_kit.json was written with), also the
// tokenizer kit: its SHA-256 checked, then every case's text tokenized (counts.tokenizer).
//   node web_demo/tests/fixtures_check.mjs [FIXTURES_DIR] [VOCAB_TXT]
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { findText, nearestTexts, normalise } from "../gallery.js";
import { resizePlan } from "../preprocess.js";
import { decodeFloat16, topk } from "../search.js";
import { WordPieceTokenizer, readVocab } from "../tokenizer.js";

const dir = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "fixtures");
const load = (name) => JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const mismatches = [];
const counts = {};

const topkCases = load("topk").cases;
for (const c of topkCases) {
  const got = topk(Float32Array.from(c.scores), c.k).map((r) => r.id);
  if (!same(got, c.ids)) mismatches.push({ fixture: "topk", name: c.name, want: c.ids, got });
}
counts.topk = topkCases.length;

const fp16Cases = load("fp16").cases;
const bits = Uint16Array.from(fp16Cases, (c) => parseInt(c.half, 16));
const decoded = decodeFloat16(bits);
const asBits = new Uint32Array(decoded.buffer);
fp16Cases.forEach((c, i) => {
  const ok = c.float32 === "nan" ? Number.isNaN(decoded[i]) : asBits[i] === parseInt(c.float32, 16);
  if (!ok) mismatches.push({ fixture: "fp16", half: c.half, want: c.float32, got: `0x${asBits[i].toString(16)}` });
});
counts.fp16 = fp16Cases.length;

const doc = load("nearest_texts");
for (const c of doc.normal_forms) {
  const got = normalise(c.text);
  if (got !== c.normal) mismatches.push({ fixture: "normal_forms", text: c.text, want: c.normal, got });
}
for (const c of doc.cases) {
  const found = findText(doc.texts, c.query);
  if (found.id !== c.id) mismatches.push({ fixture: "find", query: c.query, want: c.id, got: found.id });
  if (c.id < 0) {
    const got = nearestTexts(doc.texts, c.query, 5);
    if (!same(got, c.nearest)) mismatches.push({ fixture: "nearest", query: c.query, want: c.nearest, got });
  }
}
counts.texts = doc.cases.length + doc.normal_forms.length;

const plans = load("resize_plans").cases;
for (const [w, h, size, ...want] of plans) {
  const p = resizePlan(w, h, size);
  const got = [p.nw, p.nh, p.left, p.top];
  if (!same(got, want)) mismatches.push({ fixture: "resize_plans", w, h, size, want, got });
}
counts.resize_plans = plans.length;

const vocabPath = process.argv[3];
if (vocabPath) {
  const kit = load("tokenizer_kit");
  const bytes = readFileSync(vocabPath);
  const sha = createHash("sha256").update(bytes).digest("hex");
  if (sha !== kit.vocab_sha256) {
    const why = "not the vocab.txt the kit was written with";
    mismatches.push({ fixture: "tokenizer", vocab: vocabPath, want: kit.vocab_sha256, got: sha, why });
  }
  let tok = null;
  try {
    tok = new WordPieceTokenizer(readVocab(new TextDecoder("utf-8", { fatal: true }).decode(bytes)), kit.settings);
  } catch (e) {
    mismatches.push({ fixture: "tokenizer", vocab: vocabPath, error: e.message });
  }
  let wrong = 0;
  for (const c of tok ? kit.cases : []) {
    const got = Array.from(tok.encode(c.text));
    if (same(got, c.ids)) continue;
    // the first few in full; the rest by their text only
    const m = { fixture: "tokenizer", text: c.text };
    mismatches.push(wrong++ < 5 ? { ...m, want: c.ids, got } : m);
  }
  counts.tokenizer = kit.cases.length;
}
console.log(JSON.stringify({ counts, mismatches }));
process.exitCode = mismatches.length ? 1 : 0;
