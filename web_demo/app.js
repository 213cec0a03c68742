// The page: load and check the bundle, run the image encoder with onnxruntime-web (WebGPU when the
// browser has a hardware GPU adapter, else WASM), search the index, show the top-k texts. When the
// bundle has a text side (manifest text_encoder), its tokenizer and a text encoder are loaded after
// the image side and a free-text box searches the index and the gallery (text_search.js).
// Test hook: window.ammkd (state, runGolden, runGoldenImage, embedTensor, search, searchText,
// useTextEncoder, benchText, lastText()).

import { Bundle, BundleError, FileSource, UrlSource, onnxTarget } from "./bundle.js";
import { ImageInputError, preprocessFile, resizePlan } from "./preprocess.js";
import { Gallery, findText } from "./gallery.js";
import { TextIndex } from "./search.js";
import {
  QueryError,
  TextEncoderSession,
  checkKit,
  checkQuery,
  chooseTextTarget,
  openTokenizer,
  textSideOf,
  textVariants,
} from "./text_search.js";

const params = new URLSearchParams(location.search);
const BUNDLE_URL = new URL(params.get("bundle") || "bundle/", location.href);
const $ = (id) => document.getElementById(id);

const state = {
  ready: false,
  error: null,
  status: "loading",
  threads: 1,
  crossOriginIsolated: globalThis.crossOriginIsolated === true,
  ep: null, // the execution provider the encoder runs on: "webgpu" or "wasm"
  epNote: "", // why it is not WebGPU, when it is not
  scan: null, // the index scan: "wasm-simd" (WebAssembly SIMD) or "js" (?scan=auto|wasm|js)
  scanNote: "", // why it is not WebAssembly SIMD, when it is not
  scanKernel: null, // "relaxed-madd" (relaxed SIMD fused multiply-add), "mul-add" or "js"
  source: "", // where the bundle comes from: the server's /bundle/ or a folder the user opened
  loads: 0, // bundles loaded (or refused) so far: a new folder starts load number loads + 1
  text: idleText(), // the text side: see idleText
  textSearches: 0, // free-text searches run (or refused) so far
};
const timings = {};
let ort, bundle, target, session, index, gallery;
/** The loaded text side: {side, tokenizer, encoder} (text_search.js), or null. */
let text = null;
let textGen = 0; // bumped by every text-side load and unload: a stale load drops what it made
let lastText = null; // the last free-text search's result
// Free-text searches, benchmarks and the release of a replaced encoder run one after another: an
// onnxruntime-web session runs one call at a time, and is not released under a running query.
let textQueue = Promise.resolve();
function queued(job) {
  const run = textQueue.then(job);
  textQueue = run.catch(() => {});
  return run;
}

/**
 * status: "none" (the bundle has no text side), "loading", "ready" or "refused" (error says why:
 * a tampered tokenizer file, a text encoder of the wrong width, ...). quantization, file, bytes,
 * ep, epNote: the text encoder in use; variants: what the bundle holds; vocab: tokens; kit: the
 * kit's check ({cases, idsMatch, mismatches, embedded, cosine, bound}: checkKit); loadMs.
 */
function idleText() {
  return { status: "none", error: null, quantization: null, file: null, bytes: null, ep: null, epNote: "", variants: [], vocab: null, kit: null };
}

/**
 * ?ep=auto (default): WebGPU when the browser offers a hardware adapter, else WASM (a software
 * adapter such as SwiftShader is slower than WASM). ?ep=webgpu: WebGPU on any adapter.
 * ?ep=wasm: WASM only. Returns {ep, note}: note says why WebGPU is not used.
 */
async function chooseProvider(asked) {
  if (!["auto", "webgpu", "wasm"].includes(asked)) throw new Error(`?ep=${asked}: use auto, webgpu or wasm`);
  if (asked === "wasm") return { ep: "wasm", note: "WASM asked for (?ep=wasm)" };
  if (!navigator.gpu) return { ep: "wasm", note: "this browser has no WebGPU" };
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { ep: "wasm", note: `WebGPU adapter request failed (${e.message})` };
  }
  if (!adapter) return { ep: "wasm", note: "WebGPU offers no adapter here" };
  const info = adapter.info || {};
  const software = info.isFallbackAdapter || adapter.isFallbackAdapter || info.architecture === "swiftshader";
  if (software && asked === "auto") return { ep: "wasm", note: "WebGPU adapter is software (slower than WASM); ?ep=webgpu forces it" };
  return { ep: "webgpu", note: "", adapter: [info.vendor, info.architecture].filter(Boolean).join(" ") };
}

function setStatus(text, kind = "info") {
  state.status = text;
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function showTimings() {
  const parts = ["load", "preprocess", "encode", "search"]
    .filter((k) => k in timings)
    .map((k) => `${k} ${timings[k].toFixed(1)} ms`);
  $("timings").textContent = parts.join(" · ");
}

/** Fill the list element `id` with one row (score, text) per hit. */
function listHits(id, hits) {
  const list = $(id);
  list.replaceChildren();
  for (const h of hits) {
    const li = document.createElement("li");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = h.score.toFixed(4);
    const text = document.createElement("span");
    text.textContent = h.text;
    li.append(score, text);
    list.append(li);
  }
}

function showHits(hits, caption) {
  listHits("results", hits);
  $("results-caption").textContent = caption;
}

function k() {
  const v = parseInt($("k").value, 10);
  return Number.isInteger(v) && v > 0 ? Math.min(v, 100) : 5;
}

/** Input tensor (Float32Array, 1x3xSxS) -> L2-normalised embedding (Float32Array, D). */
async function embedTensor(tensor) {
  const s = bundle.manifest.input.size;
  if (tensor.length !== 3 * s * s) throw new Error(`input has ${tensor.length} values, expected ${3 * s * s}`);
  const feeds = { [target.input_name || session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, s, s]) };
  const t0 = performance.now();
  const out = await session.run(feeds);
  timings.encode = performance.now() - t0;
  const emb = out[target.output_name || session.outputNames[0]].data;
  return Float32Array.from(emb);
}

function search(embedding, kk = 5) {
  const t0 = performance.now();
  const hits = index.search(embedding, kk);
  timings.search = performance.now() - t0;
  return hits;
}

async function runGolden(i = 0) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const golden = bundle.manifest.golden || [];
  if (!(i >= 0 && i < golden.length)) throw new Error(`golden[${i}]: the bundle has ${golden.length} golden inputs`);
  const input = await bundle.readFloat32(golden[i].input);
  const embedding = await embedTensor(input);
  const hits = search(embedding, k());
  showTimings();
  showHits(hits, `golden input ${i} (${golden[i].input.path})`);
  return { embedding: Array.from(embedding), topk: hits, timings: { ...timings }, scan: index.lastPath };
}

/**
 * Golden image i (its PNG, hash-checked) through the page's own preprocessing (decode, resize,
 * centre crop on a canvas), the encoder and the search: the tensor, the geometry it used, the
 * embedding and the top-k, for the test to compare with the golden input and embedding.
 */
async function runGoldenImage(i = 0) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const golden = bundle.manifest.golden || [];
  if (!(i >= 0 && i < golden.length)) throw new Error(`golden[${i}]: the bundle has ${golden.length} golden images`);
  const bytes = await bundle.readBytes(golden[i].image);
  const file = new File([bytes], golden[i].image.path.split("/").pop(), { type: "image/png" });
  const { tensor, width, height } = await preprocessFile(file, bundle.manifest.input, document.createElement("canvas"));
  const embedding = await embedTensor(tensor);
  const hits = search(embedding, k());
  const plan = resizePlan(width, height, bundle.manifest.input.size);
  return { width, height, plan, tensor: Array.from(tensor), embedding: Array.from(embedding), topk: hits };
}

async function runFile(file) {
  if (!state.ready) return;
  $("message").textContent = "";
  try {
    const t0 = performance.now();
    const { tensor, width, height } = await preprocessFile(file, bundle.manifest.input, $("crop"));
    timings.preprocess = performance.now() - t0;
    $("preview").src = URL.createObjectURL(file);
    const embedding = await embedTensor(tensor);
    const hits = search(embedding, k());
    showTimings();
    showHits(hits, `${file.name || "photo"} (${width}x${height})`);
    return hits;
  } catch (e) {
    const msg = e instanceof ImageInputError ? e.message : `${file.name || "photo"}: ${e.message}`;
    $("message").textContent = msg;
    $("results").replaceChildren();
    $("results-caption").textContent = "";
    $("preview").removeAttribute("src");
    $("crop").getContext("2d").clearRect(0, 0, $("crop").width, $("crop").height);
    state.lastError = msg;
    return null;
  }
}

/**
 * The encoder's session on `choice.ep` -> {session, ep, note}; a WebGPU session that cannot be
 * created falls back to WASM, and the note says why.
 */
async function createSession(modelBytes, choice, sessionConfig = target.session_config) {
  const options = { graphOptimizationLevel: "all" };
  if (sessionConfig) options.extra = { ...sessionConfig }; // e.g. session.disable_quant_qdq
  let note = choice.note;
  if (choice.ep === "webgpu") {
    try {
      const gpu = await ort.InferenceSession.create(modelBytes, { ...options, executionProviders: ["webgpu", "wasm"] });
      return { session: gpu, ep: "webgpu", note };
    } catch (e) {
      note = `WebGPU session failed (${e.message || e}); running on WASM`;
    }
  }
  return { session: await ort.InferenceSession.create(modelBytes, { ...options, executionProviders: ["wasm"] }), ep: "wasm", note };
}

/** Runtime settings are fixed by the first load: onnxruntime-web is configured once per page. */
let choice = null;

async function startRuntime() {
  if (choice) return;
  choice = await chooseProvider(params.get("ep") || "auto");
  // the WebGPU build of onnxruntime-web also runs WASM; the plain WASM build is smaller
  ort = await import(choice.ep === "webgpu" ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href; // served locally, never a CDN
  const asked = parseInt(params.get("threads") || "", 10); // ?threads=N pins the WASM threads (benchmarks)
  const most = state.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  state.threads = Number.isInteger(asked) && asked > 0 ? Math.min(asked, most) : most;
  ort.env.wasm.numThreads = state.threads;
}

/** Forget the current bundle (a new one is being opened): controls off, results and session gone. */
async function unload() {
  state.ready = false;
  state.error = null;
  state.scan = null;
  state.scanNote = "";
  for (const el of document.querySelectorAll("#file, #camera, #k")) el.disabled = true;
  for (const id of ["results", "photos", "text-results", "text-photos", "text-variant"]) $(id).replaceChildren();
  for (const id of ["results-caption", "message", "gallery-message", "timings", "bundle-info", "text-info", "text-message", "text-timings"]) {
    $(id).textContent = "";
  }
  $("gallery").hidden = true;
  $("text-search").hidden = true;
  for (const key of Object.keys(timings)) delete timings[key];
  textGen += 1;
  state.text = idleText();
  lastText = null;
  const old = text;
  text = null;
  if (old) await queued(() => old.encoder.release());
  if (session) await session.release().catch(() => {});
  session = index = gallery = bundle = null;
}

async function load(source) {
  const t0 = performance.now();
  await startRuntime();
  state.source = source.label;
  setStatus(`loading bundle from ${source.label}…`);
  bundle = await Bundle.open(source);
  const m = bundle.manifest;
  target = onnxTarget(m);
  const [modelBytes, vectorBytes, texts] = await Promise.all([
    bundle.readBytes(target.file),
    bundle.readBytes(m.index.vectors),
    bundle.readJson(m.index.texts),
  ]);
  if (!Array.isArray(texts) || texts.length !== m.index.count) {
    throw new BundleError(`${m.index.texts.path}: expected a list of ${m.index.count} texts`);
  }
  index = await TextIndex.create(vectorBytes, texts, m.index.count, m.index.dim, { scan: params.get("scan") || "auto" });
  state.scan = index.path;
  state.scanNote = index.note;
  state.scanKernel = index.kernel;
  setStatus(`starting the encoder (${choice.ep === "webgpu" ? "WebGPU" : "WASM"})…`);
  const created = await createSession(new Uint8Array(modelBytes), choice);
  session = created.session;
  state.ep = created.ep;
  state.epNote = created.note;
  timings.load = performance.now() - t0;
  const runtime =
    state.ep === "webgpu"
      ? `WebGPU${choice.adapter ? " (" + choice.adapter + ")" : ""}`
      : `WASM, ${state.threads} thread(s)${state.crossOriginIsolated ? "" : " (not cross-origin isolated)"}`;
  const model = m.model ? m.model.name || m.model.student || "" : "";
  $("bundle-info").textContent =
    `${model ? model + " · " : ""}${target.file.path} (${(target.file.bytes / 1e6).toFixed(1)} MB, ${target.quantization}) · ` +
    `${m.index.count} texts × ${m.index.dim} · input ${m.input.size}px · ${runtime}` +
    (state.epNote ? ` · ${state.epNote}` : "") +
    ` · search: ${state.scan === "wasm-simd" ? "WASM SIMD" : "JS"}${state.scanNote ? " (" + state.scanNote + ")" : ""}`;
  gallery = await Gallery.open(bundle);
  if (gallery) $("gallery-info").textContent = `${gallery.count} photos`;
  // a bundle with a text side searches its gallery from the free-text box; the lookup by one of
  // the bundle's texts (below) is for bundles without one, or whose text side is refused
  const side = "text_encoder" in m && m.text_encoder !== null;
  $("gallery").hidden = !gallery || side;
  showTimings();
  state.ready = true;
  setStatus(side ? "ready: choose or drop a photo (the text encoder is loading)" : "ready: choose or drop a photo", "ok");
  for (const el of document.querySelectorAll("#file, #camera, #k")) el.disabled = false;
  if (side) loadTextSide(params.get("text") || "");
}

/** Show the text section's state: the box is usable only when the text side is ready. */
function showTextSide() {
  const t = state.text;
  $("text-search").hidden = t.status === "none";
  $("text-query").disabled = $("text-submit").disabled = t.status !== "ready";
  $("text-variant").disabled = t.status === "loading" || t.variants.length < 2;
  if (t.status === "loading") $("text-info").textContent = `loading the text encoder${t.quantization ? " (" + t.quantization + ")" : ""}…`;
  if (t.status === "refused") {
    $("text-info").textContent = "";
    $("text-message").textContent = `text search refused: ${t.error}`;
  }
  if (t.status === "ready") {
    const mb = (t.bytes / 1e6).toFixed(1);
    const where = t.ep === "webgpu" ? "WebGPU" : `WASM, ${state.threads} thread(s)`;
    const k = t.kit;
    const kit = !k || !k.cases
      ? "no tokenizer kit"
      : `kit: ${k.idsMatch}/${k.cases} token ids match` +
        (k.cosine === null ? "" : `, cosine ≥ ${k.cosine.toFixed(4)} on ${k.embedded}`) +
        (k.idsMatch < k.cases || k.cosine === null || k.cosine < k.bound
          ? ` (WARNING: below the bundle's bounds (cosine ${k.bound}); results may differ from Python's)`
          : "");
    $("text-info").textContent =
      `${t.file} (${mb} MB, ${t.quantization}; ${where}${t.epNote ? ", " + t.epNote : ""}) · WordPiece, ${t.vocab} tokens · ${kit}`;
  }
  if (!state.ready) return;
  // the lookup among the bundle's texts stays available for the gallery when free text is not
  $("gallery").hidden = !gallery || (t.status !== "none" && t.status !== "refused");
  if (t.status === "ready" && state.status.includes("text encoder is loading")) setStatus("ready: choose or drop a photo, or type a text", "ok");
  if (t.status === "refused" && state.status.includes("text encoder is loading")) setStatus("ready: choose or drop a photo (text search refused: see below)", "ok");
}

/**
 * Load the tokenizer (kept when only the encoder changes) and the text encoder of quantization
 * `asked` ("" : the smallest the bundle holds, TEXT_PREFERENCE), each file hash-checked, then the
 * kit (checkKit): its texts tokenized, its first texts embedded, which also checks the output
 * width; on WebGPU, an encoder below the kit's bound is moved to WASM. Refusals go to state.text
 * and the page, never further: the image side keeps working.
 */
async function loadTextSide(asked) {
  if (asked === "fp32") asked = "none"; // ?text=fp32: the unquantized encoder, as the select names it
  const gen = ++textGen;
  const m = bundle.manifest;
  const previous = text;
  const t0 = performance.now();
  try {
    const side = textSideOf(m);
    if (!side) {
      state.text = idleText();
      return showTextSide();
    }
    const variants = [...textVariants(side)].map(([q, t]) => ({ quantization: q, path: t.file.path, bytes: t.file.bytes }));
    state.text = { ...idleText(), status: "loading", variants, quantization: asked || null };
    fillVariants(variants, asked);
    $("text-message").textContent = "";
    showTextSide();
    const chosen = chooseTextTarget(side, asked);
    state.text.quantization = chosen.quantization;
    fillVariants(variants, chosen.quantization);
    showTextSide();
    const tokenizer = previous && previous.side === side ? previous.tokenizer : await openTokenizer(bundle, side);
    const modelBytes = await bundle.readBytes(chosen.file);
    if (gen !== textGen) return;
    let created = await createSession(new Uint8Array(modelBytes), choice, chosen.session_config);
    let encoder = new TextEncoderSession(ort, created.session, chosen, side, created.ep, created.note);
    let kit;
    try {
      kit = await checkKit(bundle, side, tokenizer, encoder);
      if (created.ep === "webgpu" && kit.cosine !== null && kit.cosine < kit.bound) {
        // the kit says WebGPU computes this graph wrongly here: run it on WASM instead
        const why = `on WebGPU its kit cosine was ${kit.cosine.toFixed(4)}, below ${kit.bound}; running on WASM`;
        await encoder.release();
        created = await createSession(new Uint8Array(modelBytes), { ep: "wasm", note: why }, chosen.session_config);
        encoder = new TextEncoderSession(ort, created.session, chosen, side, created.ep, created.note);
        kit = await checkKit(bundle, side, tokenizer, encoder);
      }
    } catch (e) {
      await encoder.release();
      throw e;
    }
    if (gen !== textGen) return encoder.release();
    text = { side, tokenizer, encoder };
    if (previous) await queued(() => previous.encoder.release());
    state.text = {
      ...state.text,
      status: "ready",
      file: chosen.file.path,
      bytes: chosen.file.bytes,
      ep: created.ep,
      epNote: choice.ep === "webgpu" && created.ep !== "webgpu" ? created.note : "",
      vocab: tokenizer.vocab.length,
      kit: { ...kit, mismatches: kit.mismatches.slice(0, 5) },
      loadMs: performance.now() - t0,
    };
  } catch (e) {
    if (gen !== textGen) return;
    if (previous && text === previous) {
      text = null; // the text side is refused: the encoder it had goes too
      await queued(() => previous.encoder.release());
    }
    state.text = { ...state.text, status: "refused", error: e instanceof BundleError ? e.message : `${e.name || "Error"}: ${e.message || e}` };
    console.error(e);
  }
  showTextSide();
}

function fillVariants(variants, selected) {
  const select = $("text-variant");
  select.replaceChildren(
    ...variants.map((v) => {
      const o = document.createElement("option");
      o.value = v.quantization;
      o.textContent = `${v.quantization === "none" ? "fp32" : v.quantization} (${(v.bytes / 1e6).toFixed(0)} MB)`;
      o.selected = v.quantization === selected;
      return o;
    }),
  );
}

/** Switch the text encoder to another variant the bundle holds ("none", "int8-dynamic", ...). */
async function useTextEncoder(quantization) {
  if (!bundle || !textSideOf(bundle.manifest)) throw new Error("this bundle has no text encoder");
  await loadTextSide(quantization);
  return { ...state.text };
}

/** Open a bundle (the server's, or a folder the user chose): refusals are shown, never thrown. */
async function openBundle(source) {
  await unload();
  try {
    await load(source);
  } catch (e) {
    state.error = e instanceof BundleError ? e.message : `${e.name || "Error"}: ${e.message || e}`;
    setStatus(`refused: ${state.error}`, "error");
    console.error(e);
  } finally {
    state.loads += 1;
  }
}

function wire() {
  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    searchText($("text-query").value);
  });
  $("text-variant").addEventListener("change", (ev) => useTextEncoder(ev.target.value).catch((e) => console.error(e)));
  $("gallery-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    searchGallery($("gallery-text").value);
  });
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (ev) => {
      const f = ev.target.files && ev.target.files[0];
      if (f) runFile(f);
      ev.target.value = "";
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const item = ev.dataTransfer && ev.dataTransfer.items && ev.dataTransfer.items[0];
    const entry = item && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry && entry.isDirectory) return openBundle(await FileSource.fromDirectoryEntry(entry)); // a bundle folder
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) runFile(f);
  });
  $("folder").addEventListener("change", (ev) => {
    if (ev.target.files && ev.target.files.length) openBundle(FileSource.fromFileList(ev.target.files));
    ev.target.value = "";
  });
}

/** Text -> top-k photos of the gallery: {text, textId, hits} or {error, suggestions}. */
function searchGallery(text, kk = k()) {
  if (!gallery) return { error: "this bundle has no gallery (make one with ammkd search --gallery DIR --text ...)" };
  const found = findText(index.texts, text.trim());
  const list = $("photos");
  list.replaceChildren();
  if (found.id < 0) {
    const msg = `"${text}" is not one of the bundle's texts; nearest: ${found.suggestions.join(" | ")}`;
    $("gallery-message").textContent = msg;
    return { error: msg, suggestions: found.suggestions };
  }
  $("gallery-message").textContent = "";
  const query = index.vector(found.id);
  const hits = gallery.search(query, kk);
  for (const h of hits) list.append(photoItem(h));
  return { text: index.texts[found.id], textId: found.id, hits };
}

function showTextResults(hits, photos) {
  listHits("text-results", hits);
  const shelf = $("text-photos");
  shelf.replaceChildren();
  for (const h of photos) shelf.append(photoItem(h));
}

function photoItem(h) {
  const li = document.createElement("li");
  const cap = document.createElement("span");
  cap.textContent = `${h.score.toFixed(3)} ${h.image}`;
  if (h.url) {
    const img = document.createElement("img");
    img.src = h.url;
    img.alt = h.image;
    img.width = 96;
    li.append(img);
  }
  li.append(cap);
  return li;
}

/**
 * A free-text query -> {query, quantization, ids (the token ids), embedding, hits: top-k texts
 * [{id, score, text}], photos: top-k of the gallery [{id, score, image, url}] (none without one),
 * timings: {tokenize, encode, search, gallery} ms} or {query, error}. Shown in the text section;
 * searches run one at a time (queued).
 */
function searchText(query, kk = k()) {
  return queued(() => runTextQuery(query, kk));
}

async function runTextQuery(query, kk) {
  const out = { query };
  try {
    if (!state.ready) throw new QueryError(`not ready: ${state.error || state.status}`);
    const t = state.text;
    if (t.status === "none") throw new QueryError("this bundle has no text encoder (export it with --text-encoder on)");
    if (t.status === "loading") throw new QueryError("the text encoder is still loading; try again in a moment");
    if (t.status === "refused") throw new QueryError(`text search refused: ${t.error}`);
    checkQuery(query);
    const { tokenizer, encoder } = text;
    const t0 = performance.now();
    const ids = tokenizer.encode(query);
    const t1 = performance.now();
    const embedding = await encoder.embedIds(ids);
    const t2 = performance.now();
    const hits = index.search(embedding, kk);
    const t3 = performance.now();
    const photos = gallery ? gallery.search(embedding, kk) : [];
    const t4 = performance.now();
    Object.assign(out, {
      quantization: encoder.target.quantization,
      ids: Array.from(ids),
      embedding: Array.from(embedding),
      hits,
      photos,
      scan: index.lastPath,
      timings: { tokenize: t1 - t0, encode: t2 - t1, search: t3 - t2, gallery: t4 - t3 },
    });
    $("text-message").textContent = "";
    showTextResults(hits, photos);
    const tm = out.timings;
    $("text-timings").textContent =
      `${ids.length} tokens · tokenize ${tm.tokenize.toFixed(2)} ms · encode ${tm.encode.toFixed(1)} ms · search ${tm.search.toFixed(2)} ms` +
      (gallery ? ` · gallery ${tm.gallery.toFixed(2)} ms` : "");
  } catch (e) {
    out.error = e instanceof QueryError || e instanceof BundleError ? e.message : `${e.name || "Error"}: ${e.message || e}`;
    $("text-message").textContent = out.error;
    $("text-timings").textContent = "";
    showTextResults([], []);
  } finally {
    state.textSearches += 1;
    lastText = out;
  }
  return out;
}

/**
 * Timing loop for benchmarks: each of `queries` tokenized and embedded (one session.run) per round,
 * `warmup` rounds untimed, then `runs` timed -> {quantization, ep, threads, rows: [{query, tokens,
 * tokenize, encode, total}] ms}.
 */
function benchText(queries, runs = 10, warmup = 2) {
  return queued(() => timeText(queries, runs, warmup));
}

async function timeText(queries, runs, warmup) {
  if (state.text.status !== "ready") throw new Error(`text side not ready: ${state.text.error || state.text.status}`);
  const { tokenizer, encoder } = text;
  const rows = [];
  for (let r = 0; r < warmup + runs; r++) {
    for (const q of queries) {
      checkQuery(q);
      const t0 = performance.now();
      const ids = tokenizer.encode(q);
      const t1 = performance.now();
      await encoder.embedIds(ids);
      const t2 = performance.now();
      if (r >= warmup) rows.push({ query: q, tokens: ids.length, tokenize: t1 - t0, encode: t2 - t1, total: t2 - t0 });
    }
  }
  return { quantization: encoder.target.quantization, ep: encoder.ep, threads: state.threads, rows };
}

/** Timing loop for benchmarks: golden input i, `warmup` untimed then `runs` timed encode + search. */
async function benchGolden(i = 0, runs = 30, warmup = 5) {
  if (!state.ready) throw new Error(`not ready: ${state.error || state.status}`);
  const input = await bundle.readFloat32(bundle.manifest.golden[i].input);
  const rows = [];
  for (let r = 0; r < warmup + runs; r++) {
    const embedding = await embedTensor(input);
    search(embedding, 10);
    if (r >= warmup) rows.push({ encode: timings.encode, search: timings.search });
  }
  return { threads: state.threads, ep: state.ep, scan: index.lastPath, kernel: index.kernel, candidates: index.wasm ? index.wasm.candidates : null, load: timings.load, rows };
}

window.ammkd = {
  state,
  timings,
  runGolden,
  runGoldenImage,
  benchGolden,
  searchGallery,
  searchText,
  useTextEncoder,
  benchText,
  lastText: () => lastText,
  runFile,
  embedTensor: async (t) => Array.from(await embedTensor(t)),
  search,
};
wire();
openBundle(new UrlSource(BUNDLE_URL));
