// The bundle's optional text side (manifest `text_encoder`, docs/design.md §5.10): its WordPiece
// tokenizer (tokenizer.js) and one ONNX text encoder run by onnxruntime-web, so that a free-text
// query is embedded in the browser and searches the index (top-k texts) and the gallery (top-k
// photos). The Python reference is bundle/text_encoder.py (TextSide.embed) and
// mobile_runtime/retriever.py (embed_text).
//
// Every file is read through Bundle.readBytes: its size and SHA-256 are checked against the
// manifest before its bytes are used, and a refusal names the file.

import { BundleError, LIMITS, bounded, checkEntry } from "./bundle.js";
import { WordPieceTokenizer, readVocab } from "./tokenizer.js";

/** Longer queries are refused before tokenizing (bundle/text_encoder.py MAX_QUERY_CHARS). */
export const MAX_QUERY_CHARS = 10_000;
/** The text encoder variants a bundle may hold (quantization), as the manifest names them. */
export const TEXT_QUANTIZATIONS = ["none", "int8-dynamic", "int8-weights"];
/** What the page loads when not asked (?text=...): the smallest download first. MiniLM's
 * int8-dynamic encoder is about 23 MB, int8-weights 59 MB, fp32 ("none") 92 MB. */
export const TEXT_PREFERENCE = ["int8-dynamic", "int8-weights", "none"];
/** The kit's cosine bound per weight dtype (TEXT_MIN_COSINE in Python): below it the page warns. */
const KIT_MIN_COSINE = { float32: 0.999, int8: 0.95 };

/** A query the page will not embed (empty, too long, not valid Unicode): shown, never thrown further. */
export class QueryError extends Error {
  constructor(message) {
    super(message);
    this.name = "QueryError";
  }
}

// Python's str.isspace() code points: what str.strip() removes (bundle/tokenizer.py WHITESPACE).
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;

/**
 * The checks of TextSide.embed, in its order, with its messages: a query that is empty or only
 * whitespace, that holds a lone surrogate (no UTF-8 form), or that is longer than MAX_QUERY_CHARS
 * code points (Python's len) is refused with a QueryError.
 * @param {string} text
 */
export function checkQuery(text) {
  let blank = true;
  if (typeof text === "string") {
    for (const ch of text) {
      if (!PY_SPACE.test(ch)) {
        blank = false;
        break;
      }
    }
  }
  if (blank) throw new QueryError("text query is empty: type a few words");
  const wellFormed = typeof text.isWellFormed === "function" ? text.isWellFormed() : !/\p{Cs}/u.test(text);
  if (!wellFormed) throw new QueryError("text query is not valid Unicode (it holds a lone surrogate); type the text again");
  let n = 0;
  for (const _ of text) n++; // code points, as Python counts a str
  if (n > MAX_QUERY_CHARS) throw new QueryError(`text query has ${n} characters; at most ${MAX_QUERY_CHARS} are accepted`);
}

/**
 * The manifest's `text_encoder` section, checked as far as the page relies on it (file entries
 * inside the bundle, dim bounded and equal to the index's, ONNX targets), or null when the bundle
 * has none. A malformed section is a BundleError naming the manifest key.
 */
export function textSideOf(m, where = "manifest.json") {
  const s = m.text_encoder;
  if (s === undefined || s === null) return null;
  const need = (cond, what) => {
    if (!cond) throw new BundleError(`${where}: malformed manifest: text_encoder ${what}`);
  };
  need(typeof s === "object" && !Array.isArray(s), "is not an object");
  bounded(s.dim, where, "text_encoder/dim", 1, LIMITS.MAX_DIM);
  if (s.dim !== m.index.dim) {
    throw new BundleError(`${where}: text_encoder.dim ${s.dim} does not match the index's ${m.index.dim}`);
  }
  need(s.tokenizer && typeof s.tokenizer === "object", "has no tokenizer");
  need(s.tokenizer.kind === "wordpiece", `tokenizer kind ${JSON.stringify(s.tokenizer.kind)} is not "wordpiece"`);
  checkEntry(s.tokenizer.vocab, where, "text_encoder.tokenizer.vocab");
  checkEntry(s.tokenizer.settings, where, "text_encoder.tokenizer.settings");
  if (s.kit !== undefined) {
    need(s.kit && typeof s.kit === "object", "kit is not an object");
    checkEntry(s.kit.cases, where, "text_encoder.kit.cases");
    checkEntry(s.kit.embeddings, where, "text_encoder.kit.embeddings");
    const e = s.kit.embeddings;
    need(e.dtype === "float32" && e.shape.length === 2 && e.shape[1] === s.dim, `kit embeddings are not float32 (M, ${s.dim})`);
  }
  need(Array.isArray(s.targets) && s.targets.length > 0, "has no targets");
  s.targets.forEach((t, i) => {
    need(t && typeof t === "object", `targets[${i}] is not an object`);
    need(TEXT_QUANTIZATIONS.includes(t.quantization), `targets[${i}] quantization ${JSON.stringify(t.quantization)}`);
    if (t.format === "onnx") checkEntry(t.file, where, `text_encoder.targets[${i}].file`);
  });
  return s;
}

/** The ONNX text encoders of the section by quantization (the first of each, as Python picks). */
export function textVariants(side) {
  const held = new Map();
  for (const t of side.targets) if (t.format === "onnx" && t.file && !held.has(t.quantization)) held.set(t.quantization, t);
  return held;
}

/**
 * The target of `asked` (a quantization; "" or null: the first of TEXT_PREFERENCE the bundle
 * holds), else a BundleError listing what it has.
 */
export function chooseTextTarget(side, asked, where = "manifest.json") {
  const held = textVariants(side);
  const want = asked || TEXT_PREFERENCE.find((q) => held.has(q));
  if (!held.has(want)) {
    throw new BundleError(`${where}: no text encoder with quantization ${want} (has: ${[...held.keys()].join(", ") || "none"})`);
  }
  return held.get(want);
}

/** tokenizer/vocab.txt and tokenizer/settings.json, hash-checked -> WordPieceTokenizer. */
export async function openTokenizer(bundle, side) {
  const { vocab: vocabEntry, settings: settingsEntry } = side.tokenizer;
  let vocab;
  try {
    vocab = readVocab(new TextDecoder("utf-8", { fatal: true }).decode(await bundle.readBytes(vocabEntry)));
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`${vocabEntry.path}: ${e.message.replace(/^vocab\.txt: /, "")}`);
  }
  const settings = await bundle.readJson(settingsEntry);
  try {
    return new WordPieceTokenizer(vocab, settings);
  } catch (e) {
    throw new BundleError(`${settingsEntry.path}: ${e.message.replace(/^tokenizer\/settings\.json: /, "")}`);
  }
}

/**
 * One text encoder's onnxruntime-web session. `embedIds` runs ids (one query, unpadded) and checks
 * the output: (1, D) with D the index's width.
 */
export class TextEncoderSession {
  constructor(ort, session, target, side, ep, note) {
    this.ort = ort;
    this.session = session;
    this.target = target;
    this.ep = ep;
    this.note = note;
    this.inputName = session.inputNames.includes(side.input_name) ? side.input_name : session.inputNames[0];
    this.outputName = session.outputNames.includes(side.output_name) ? side.output_name : session.outputNames[0];
    this.dim = side.dim;
  }

  /** @param {Int32Array|number[]} ids @returns {Promise<Float32Array>} the (D,) embedding */
  async embedIds(ids) {
    const feeds = { [this.inputName]: new this.ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [1, ids.length]) };
    const out = (await this.session.run(feeds))[this.outputName];
    const dims = out.dims;
    const width = dims.length === 2 && dims[0] === 1 ? dims[1] : dims.join("x");
    if (width !== this.dim) {
      throw new BundleError(`${this.target.file.path}: text encoder output width ${width} does not match the index's ${this.dim}`);
    }
    return Float32Array.from(out.data);
  }

  release() {
    return this.session.release().catch(() => {});
  }
}

/**
 * The kit (golden/tokenizer_kit.json + golden/text_embeddings.f32.bin), hash-checked: every case
 * tokenized (ids compared with the kit's), and the first `embed` cases with distinct ids embedded
 * and compared with PyTorch's embeddings (cosine), which also checks the encoder's output width.
 * `ammkd verify` holds every case to the bound of the encoder's weight dtype; a page whose runtime
 * falls below it (a faulty execution provider) learns it here.
 * -> {cases, idsMatch, mismatches: [texts], embedded, cosine (the least), bound}.
 */
export async function checkKit(bundle, side, tokenizer, encoder, embed = 4) {
  const bound = KIT_MIN_COSINE[encoder.target.dtype] ?? KIT_MIN_COSINE.int8;
  if (!side.kit) {
    // no kit: embed a short text only to check the output width (and warm the session up)
    await encoder.embedIds(tokenizer.encode("a photo"));
    return { cases: 0, idsMatch: 0, mismatches: [], embedded: 0, cosine: null, bound };
  }
  const [kit, embeddings] = await Promise.all([bundle.readJson(side.kit.cases), bundle.readFloat32(side.kit.embeddings)]);
  const cases = kit && Array.isArray(kit.cases) ? kit.cases : null;
  if (!cases || !cases.length || !cases.every((c) => c && typeof c.text === "string" && Array.isArray(c.ids))) {
    throw new BundleError(`${side.kit.cases.path}: not a tokenizer kit ({"cases": [{"text", "ids"}]})`);
  }
  const rows = side.kit.embeddings.shape[0];
  if (rows !== cases.length) {
    throw new BundleError(`${side.kit.embeddings.path}: ${rows} embeddings for ${cases.length} kit texts`);
  }
  const mismatches = [];
  const distinct = new Map(); // ids -> case index, for the embedding check
  cases.forEach((c, i) => {
    const got = tokenizer.encode(c.text);
    if (got.length !== c.ids.length || got.some((v, j) => v !== c.ids[j])) mismatches.push(c.text);
    else if (distinct.size < embed && !distinct.has(got.join(","))) distinct.set(got.join(","), i);
  });
  let cosine = Infinity;
  for (const i of distinct.values()) {
    const emb = await encoder.embedIds(cases[i].ids);
    const want = embeddings.subarray(i * side.dim, (i + 1) * side.dim);
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let j = 0; j < side.dim; j++) {
      dot += emb[j] * want[j];
      na += emb[j] * emb[j];
      nb += want[j] * want[j];
    }
    cosine = Math.min(cosine, dot / Math.sqrt(na * nb));
  }
  if (!distinct.size) {
    await encoder.embedIds(tokenizer.encode("a photo")); // every case mismatched: still check the width
    cosine = null;
  }
  return { cases: cases.length, idsMatch: cases.length - mismatches.length, mismatches, embedded: distinct.size, cosine, bound };
}
